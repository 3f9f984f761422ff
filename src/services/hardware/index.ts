import { statfs } from 'node:fs/promises'
import { arch, cpus } from 'node:os'
import { dirname, resolve } from 'node:path'
import * as si from 'systeminformation'
import { z } from 'zod'
import { childEnv } from '../../lib/child-env.js'
import type { Logger } from '../../lib/log.js'
import { GpuSchema, type ResourceVector } from '../resources/vector.js'
import { GPU_COMMAND_TIMEOUT_MS } from './constants.js'
import { detectGpus, type GpuCommands } from './gpu.js'

export { parseNvidiaSmi, parseRocmSmi, type GpuCommands, type DetectedGpu } from './gpu.js'

/**
 * What the machine is (spec, detected once and cached: it does not change while the daemon runs)
 * and what it is doing (usage, measured on each call).
 */
export interface HardwareService {
  start: () => Promise<void>
  stop: () => Promise<void>
  spec: () => Promise<HardwareSpec>
  usage: () => Promise<HardwareUsage>
  /**
   * The most the machine can offer now, as a resource vector: logical CPUs (threads: what a
   * workload is scheduled on), total RAM, the disk space free to dms on the data dir's
   * filesystem, and every GPU whole. Onboarding is checked against it.
   */
  capacity: () => Promise<ResourceVector>
}

export const GpuSpecSchema = GpuSchema.extend({
  /** The device's index in its vendor's tool (`nvidia-smi` index, `rocm-smi` cardN). */
  vendorIndex: z.number().int().nonnegative()
})
export type GpuSpec = z.infer<typeof GpuSpecSchema>

export const HardwareSpecSchema = z.object({
  cpu: z.object({
    /** Physical cores. */
    cores: z.number().int().nonnegative(),
    /** Logical CPUs (hardware threads). */
    threads: z.number().int().positive(),
    model: z.string(),
    vendor: z.string(),
    /** Maximum (else nominal) clock; 0 when the machine does not say (common in VMs). */
    frequencyMHz: z.number().nonnegative(),
    architecture: z.string()
  }),
  ramBytes: z.number().int().nonnegative(),
  /** The filesystem holding the data dir. */
  disk: z.object({ path: z.string(), totalBytes: z.number().int().nonnegative() }),
  gpus: z.array(GpuSpecSchema)
})
export type HardwareSpec = z.infer<typeof HardwareSpecSchema>

export const HardwareUsageSchema = z.object({
  /** Unix ms of the measurement. */
  at: z.number(),
  /** Busy share of all logical CPUs since the previous measurement, 0–100. */
  cpuPercent: z.number().nonnegative(),
  /** RAM held by processes: total − available (page cache that can be reclaimed is not used). */
  ramUsedBytes: z.number().int().nonnegative(),
  ramTotalBytes: z.number().int().nonnegative(),
  diskUsedBytes: z.number().int().nonnegative(),
  /** Free to unprivileged users (root's reserved blocks excluded). */
  diskFreeBytes: z.number().int().nonnegative(),
  diskTotalBytes: z.number().int().nonnegative()
})
export type HardwareUsage = z.infer<typeof HardwareUsageSchema>

export interface HardwareInit {
  /** The data dir: the disk figures are those of the filesystem holding it. */
  dataDir?: string
  /** Vendor GPU tools to run (defaults `nvidia-smi`, `rocm-smi` looked up on PATH). */
  gpuCommands?: GpuCommands
  gpuTimeoutMs?: number
  /**
   * The daemon's environment (default process.env). The GPU tools do not get it: they run with
   * `childEnv` of it — its PATH (which decides the binary that runs) and the C locale, no secret.
   */
  env?: NodeJS.ProcessEnv
}

export interface HardwareComponents {
  log: Logger
  clock?: () => number
}

interface DiskFigures { totalBytes: number, freeBytes: number, usedBytes: number }

class Hardware implements HardwareService {
  private readonly dataDir: string
  private readonly gpuCommands: GpuCommands
  private readonly gpuTimeoutMs: number
  /** What the GPU tools run with: derived once, never the daemon's own environment. */
  private readonly toolEnv: Record<string, string>
  private readonly log: Logger
  private readonly clock: () => number
  private cached: Promise<HardwareSpec> | undefined

  constructor (init: HardwareInit, components: HardwareComponents) {
    this.dataDir = resolve(init.dataDir ?? '.')
    this.gpuCommands = init.gpuCommands ?? {}
    this.gpuTimeoutMs = init.gpuTimeoutMs ?? GPU_COMMAND_TIMEOUT_MS
    this.toolEnv = childEnv(init.env ?? process.env)
    this.log = components.log
    this.clock = components.clock ?? Date.now
  }

  async start (): Promise<void> {
    // Detect once at start so the first behaviour call answers from the cache, and a detection
    // problem shows in the start-up log rather than in someone's onboarding.
    const spec = await this.spec()
    this.log.info({ cpu: spec.cpu.model, threads: spec.cpu.threads, ramBytes: spec.ramBytes, gpus: spec.gpus.length }, 'hardware detected')
  }

  async stop (): Promise<void> {}

  async spec (): Promise<HardwareSpec> {
    if (this.cached === undefined) {
      this.cached = this.detect()
      // A failed detection is not cached: the next call tries again.
      this.cached.catch(() => { this.cached = undefined })
    }
    return await this.cached
  }

  private async detect (): Promise<HardwareSpec> {
    const [cpu, mem, disk, detected] = await Promise.all([
      si.cpu(), si.mem(), this.disk(), detectGpus(this.gpuCommands, this.toolEnv, this.log, this.gpuTimeoutMs)
    ])
    const osCpus = cpus()
    return {
      cpu: {
        cores: cpu.physicalCores,
        threads: Math.max(cpu.cores, osCpus.length, 1),
        model: [cpu.manufacturer, cpu.brand].filter(s => s !== '').join(' ') || (osCpus[0]?.model ?? 'unknown'),
        vendor: cpu.manufacturer !== '' ? cpu.manufacturer : cpu.vendor,
        frequencyMHz: Math.round(((cpu.speedMax > 0 ? cpu.speedMax : cpu.speed) * 1000) || (osCpus[0]?.speed ?? 0)),
        architecture: arch()
      },
      ramBytes: mem.total,
      disk: { path: this.dataDir, totalBytes: disk.totalBytes },
      // dms numbers devices 0…n−1, NVIDIA first then AMD, so an index names one device even on a
      // machine with both; vendorIndex keeps the tool's own number (for CUDA/HIP_VISIBLE_DEVICES).
      gpus: detected.map((g, i) => ({ index: i, vendor: g.vendor, model: g.model, vramBytes: g.vramBytes, vendorIndex: g.vendorIndex }))
    }
  }

  async usage (): Promise<HardwareUsage> {
    const [load, mem, disk] = await Promise.all([si.currentLoad(), si.mem(), this.disk()])
    return {
      at: this.clock(),
      cpuPercent: Math.round(Math.max(0, load.currentLoad) * 10) / 10,
      ramUsedBytes: Math.max(0, mem.total - mem.available),
      ramTotalBytes: mem.total,
      diskUsedBytes: disk.usedBytes,
      diskFreeBytes: disk.freeBytes,
      diskTotalBytes: disk.totalBytes
    }
  }

  async capacity (): Promise<ResourceVector> {
    const [spec, disk] = await Promise.all([this.spec(), this.disk()])
    return {
      cpuCores: spec.cpu.threads,
      ramBytes: spec.ramBytes,
      diskBytes: disk.freeBytes,
      gpus: spec.gpus.map(({ index, vendor, model, vramBytes }) => ({ index, vendor, model, vramBytes }))
    }
  }

  /** statfs of the data dir, or of its nearest existing ancestor before the dir is created. */
  private async disk (): Promise<DiskFigures> {
    let path = this.dataDir
    for (;;) {
      try {
        const s = await statfs(path)
        return { totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize, usedBytes: (s.blocks - s.bfree) * s.bsize }
      } catch (err) {
        const parent = dirname(path)
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || parent === path) throw err
        path = parent
      }
    }
  }
}

export function createHardwareService (init: HardwareInit, components: HardwareComponents): HardwareService {
  return new Hardware(init, components)
}
