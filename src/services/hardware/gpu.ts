import { execFile } from 'node:child_process'
import type { Logger } from '../../lib/log.js'
import { GPU_COMMAND_MAX_BUFFER, GPU_COMMAND_TIMEOUT_MS, MIB, NVIDIA_SMI_ARGS, ROCM_SMI_ARGS } from './constants.js'

/** One GPU as its vendor tool reports it, before dms numbers it. */
export interface DetectedGpu {
  vendor: 'NVIDIA' | 'AMD'
  /** The device's index in its vendor's tool (nvidia-smi index, rocm-smi cardN). */
  vendorIndex: number
  model: string
  vramBytes: number
}

/**
 * Parses `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits`:
 * one line per device, e.g. `0, NVIDIA GeForce RTX 3090, 24576` (memory in MiB). Model names
 * contain no commas in nvidia-smi's output, but the memory is the last field and the index the
 * first, so the name is whatever lies between.
 */
export function parseNvidiaSmi (out: string): DetectedGpu[] {
  const gpus: DetectedGpu[] = []
  for (const line of out.split(/\r?\n/)) {
    if (line.trim() === '') continue
    const fields = line.split(',').map(f => f.trim())
    if (fields.length < 3) continue
    const index = Number(fields[0])
    const mib = Number(fields[fields.length - 1])
    const model = fields.slice(1, -1).join(', ')
    // `[N/A]` or `[Not Supported]` memory (some MIG/vGPU setups) gives NaN: skip, do not guess.
    if (!Number.isInteger(index) || !Number.isFinite(mib)) continue
    gpus.push({ vendor: 'NVIDIA', vendorIndex: index, model, vramBytes: Math.round(mib * MIB) })
  }
  return gpus
}

/**
 * Parses `rocm-smi --showproductname --showmeminfo vram --json`:
 * `{"card0": {"Card series": "…", "Card model": "…", "Card vendor": "…", "VRAM Total Memory (B)":
 * "17163091968", …}, "system": {…}}`. Key capitalisation differs across ROCm releases
 * ("Card series" / "Card Series"), so keys are matched without case.
 */
export function parseRocmSmi (out: string): DetectedGpu[] {
  let data: unknown
  try { data = JSON.parse(out) } catch { return [] }
  if (data === null || typeof data !== 'object') return []
  const gpus: DetectedGpu[] = []
  for (const [card, value] of Object.entries(data as Record<string, unknown>)) {
    const m = /^card(\d+)$/.exec(card)
    if (m === null || value === null || typeof value !== 'object') continue
    const fields = new Map(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k.toLowerCase().trim(), String(v)]))
    const vram = Number(fields.get('vram total memory (b)'))
    if (!Number.isFinite(vram)) continue
    const model = fields.get('card series') ?? fields.get('card model') ?? fields.get('card sku') ?? 'AMD GPU'
    gpus.push({ vendor: 'AMD', vendorIndex: Number(m[1]), model, vramBytes: vram })
  }
  return gpus.sort((a, b) => a.vendorIndex - b.vendorIndex)
}

export interface GpuCommands {
  /** Command (name looked up on PATH, or a path) for NVIDIA; false to skip. */
  nvidia?: string | false
  /** Command for AMD ROCm; false to skip. */
  rocm?: string | false
}

/**
 * Runs the vendor tools that are present and returns every device. A tool that is absent
 * (ENOENT) means no such GPUs; one that fails or times out is logged and counted as none, so a
 * broken driver never stops the node from starting. `env` is the tools' whole environment:
 * build it with `childEnv` (src/lib/child-env.ts), never pass the daemon's own.
 */
export async function detectGpus (commands: GpuCommands, env: Readonly<Record<string, string>>, log: Logger, timeoutMs = GPU_COMMAND_TIMEOUT_MS): Promise<DetectedGpu[]> {
  const nvidia = commands.nvidia ?? 'nvidia-smi'
  const rocm = commands.rocm ?? 'rocm-smi'
  const [n, a] = await Promise.all([
    nvidia === false ? [] : run(nvidia, NVIDIA_SMI_ARGS, env, log, timeoutMs).then(out => out === null ? [] : parseNvidiaSmi(out)),
    rocm === false ? [] : run(rocm, ROCM_SMI_ARGS, env, log, timeoutMs).then(out => out === null ? [] : parseRocmSmi(out))
  ])
  return [...n.sort((x, y) => x.vendorIndex - y.vendorIndex), ...a]
}

async function run (cmd: string, args: readonly string[], env: Readonly<Record<string, string>>, log: Logger, timeoutMs: number): Promise<string | null> {
  return await new Promise(resolve => {
    // execFile looks the command up on options.env.PATH, so a PATH given here is the one used.
    execFile(cmd, [...args], { env, timeout: timeoutMs, maxBuffer: GPU_COMMAND_MAX_BUFFER, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err === null) { resolve(stdout); return }
      const e = err as NodeJS.ErrnoException & { killed?: boolean }
      if (e.code === 'ENOENT') { resolve(null); return }
      log.warn({ cmd, code: e.code, killed: e.killed === true, stderr: String(stderr).slice(0, 500) }, 'GPU detection command failed; counting no GPUs from it')
      resolve(null)
    })
  })
}
