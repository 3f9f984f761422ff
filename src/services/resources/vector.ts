import { z } from 'zod'
import { InsufficientResources, InvalidArgument } from '../../lib/errors.js'
import { formatSize } from '../../lib/units.js'

/**
 * The resource vector, the one shape quantities travel in (specs/resources.md § Units):
 * cores (fractional, milli-core precision) and bytes inside; human forms only at the CLI.
 *
 * GPUs are counted per device, by the dms index of the device, in bytes of VRAM: an onboarded
 * GPU offers `vramBytes` of its memory; a reservation takes some or all of it on a named index.
 * Two workloads may share a device when each asks for part of its VRAM; a request that names no
 * VRAM takes the whole onboarded amount, i.e. the device exclusively.
 */
export const GpuSchema = z.object({
  index: z.number().int().nonnegative(),
  vendor: z.string(),
  model: z.string(),
  vramBytes: z.number().int().nonnegative()
})
export type Gpu = z.infer<typeof GpuSchema>

export const ResourceVectorSchema = z.object({
  cpuCores: z.number().nonnegative(),
  ramBytes: z.number().int().nonnegative(),
  diskBytes: z.number().int().nonnegative(),
  gpus: z.array(GpuSchema)
})
export type ResourceVector = z.infer<typeof ResourceVectorSchema>

/**
 * One GPU a caller asks for. `index` absent: any onboarded device with enough free VRAM (matching
 * `vendor`/`model` when given). `vramBytes` absent: the whole device.
 */
export const GpuRequestSchema = z.object({
  index: z.number().int().nonnegative().optional(),
  vramBytes: z.number().int().positive().optional(),
  vendor: z.string().optional(),
  model: z.string().optional()
})
export type GpuRequest = z.infer<typeof GpuRequestSchema>

/** What a caller asks of the ledger; missing dimensions are zero. */
export const ResourceRequestSchema = z.object({
  cpuCores: z.number().nonnegative().default(0),
  ramBytes: z.number().int().nonnegative().default(0),
  diskBytes: z.number().int().nonnegative().default(0),
  gpus: z.array(GpuRequestSchema).default([])
})
export type ResourceRequest = z.input<typeof ResourceRequestSchema>

export type Dimension = 'cpuCores' | 'ramBytes' | 'diskBytes' | 'gpus'

export const ZERO: ResourceVector = Object.freeze({ cpuCores: 0, ramBytes: 0, diskBytes: 0, gpus: [] }) as ResourceVector

/** Cores are summed in integer milli-cores so 0.1 + 0.2 is exactly 0.3 (parseCores' precision). */
const MILLI = 1000
export const toMilli = (cores: number): number => Math.round(cores * MILLI)
export const fromMilli = (milli: number): number => milli / MILLI

/** VRAM taken per GPU index by a list of vectors. */
export function vramByIndex (vectors: Iterable<ResourceVector>): Map<number, number> {
  const m = new Map<number, number>()
  for (const v of vectors) for (const g of v.gpus) m.set(g.index, (m.get(g.index) ?? 0) + g.vramBytes)
  return m
}

/**
 * Sum of vectors. GPUs are merged by index (VRAM added); vendor/model come from `catalog` (the
 * onboarded devices) when the index is known there, else from the first vector naming it.
 */
export function sum (vectors: ResourceVector[], catalog: Gpu[] = []): ResourceVector {
  let milli = 0
  let ram = 0
  let disk = 0
  for (const v of vectors) { milli += toMilli(v.cpuCores); ram += v.ramBytes; disk += v.diskBytes }
  const names = new Map<number, Gpu>()
  for (const g of catalog) names.set(g.index, g)
  for (const v of vectors) for (const g of v.gpus) if (!names.has(g.index)) names.set(g.index, g)
  const gpus = [...vramByIndex(vectors)].sort(([a], [b]) => a - b).map(([index, vramBytes]) => {
    const n = names.get(index)
    return { index, vendor: n?.vendor ?? '', model: n?.model ?? '', vramBytes }
  })
  return { cpuCores: fromMilli(milli), ramBytes: ram, diskBytes: disk, gpus }
}

/**
 * `total − used` per dimension, unclamped (a negative figure is a deficit, possible only after a
 * forced shrink: see specs/resources.md). GPUs: one entry per device of `total`, plus a negative
 * one for each device `used` holds that `total` no longer has.
 */
export function subtract (total: ResourceVector, used: ResourceVector): ResourceVector {
  const taken = vramByIndex([used])
  return {
    cpuCores: fromMilli(toMilli(total.cpuCores) - toMilli(used.cpuCores)),
    ramBytes: total.ramBytes - used.ramBytes,
    diskBytes: total.diskBytes - used.diskBytes,
    gpus: [
      ...total.gpus.map(g => ({ ...g, vramBytes: g.vramBytes - (taken.get(g.index) ?? 0) })),
      // A device in use but no longer offered (after a forced shrink) shows as a deficit.
      ...used.gpus.filter(u => !total.gpus.some(g => g.index === u.index)).map(u => ({ ...u, vramBytes: -u.vramBytes }))
    ].sort((a, b) => a.index - b.index)
  }
}

/** Each dimension floored at zero. */
export function clampAtZero (v: ResourceVector): ResourceVector {
  return {
    cpuCores: Math.max(0, v.cpuCores),
    ramBytes: Math.max(0, v.ramBytes),
    diskBytes: Math.max(0, v.diskBytes),
    gpus: v.gpus.map(g => ({ ...g, vramBytes: Math.max(0, g.vramBytes) }))
  }
}

/** The amount by which `v` is below zero in each dimension, or null when it is not. */
export function deficitOf (v: ResourceVector): ResourceVector | null {
  const d: ResourceVector = {
    cpuCores: Math.max(0, -v.cpuCores),
    ramBytes: Math.max(0, -v.ramBytes),
    diskBytes: Math.max(0, -v.diskBytes),
    gpus: v.gpus.filter(g => g.vramBytes < 0).map(g => ({ ...g, vramBytes: -g.vramBytes }))
  }
  return d.cpuCores > 0 || d.ramBytes > 0 || d.diskBytes > 0 || d.gpus.length > 0 ? d : null
}

/**
 * Resolves a request against the free vector: picks devices for GPUs that name no index, fills
 * in vendor/model/VRAM, and refuses with `InsufficientResources` naming the first short
 * dimension (`dimension`, `requested`, `available`, and `gpuIndex` for a GPU).
 */
export function resolve (request: ResourceRequest, free: ResourceVector, what = 'request'): ResourceVector {
  const r = parseRequest(request)
  short('cpuCores', toMilli(r.cpuCores), toMilli(free.cpuCores), fromMilli, what)
  short('ramBytes', r.ramBytes, free.ramBytes, x => x, what)
  short('diskBytes', r.diskBytes, free.diskBytes, x => x, what)

  const chosen: Gpu[] = []
  const taken = new Set<number>()
  // Requests naming an index first, so a free-choice request cannot steal a named device.
  const ordered = [...r.gpus].sort((a, b) => Number(a.index === undefined) - Number(b.index === undefined))
  for (const g of ordered) {
    if (g.index !== undefined) {
      if (taken.has(g.index)) throw new InvalidArgument(`GPU ${g.index} is named twice in one ${what}`, { gpuIndex: g.index })
      const dev = free.gpus.find(d => d.index === g.index)
      if (dev === undefined) {
        throw new InsufficientResources(`GPU ${g.index} is not onboarded`, { dimension: 'gpus', gpuIndex: g.index, requested: g.vramBytes ?? null, available: 0 })
      }
      const want = g.vramBytes ?? dev.vramBytes
      if (want > dev.vramBytes || want === 0 || !matches(g, dev)) {
        throw new InsufficientResources(
          `${what} needs ${formatSize(want)} of VRAM on GPU ${g.index}${matches(g, dev) ? '' : ` (${g.vendor ?? ''} ${g.model ?? ''})`}, ${formatSize(dev.vramBytes)} free`,
          { dimension: 'gpus', gpuIndex: g.index, requested: want, available: dev.vramBytes })
      }
      taken.add(g.index)
      chosen.push({ ...dev, vramBytes: want })
    } else {
      const dev = free.gpus.find(d => !taken.has(d.index) && matches(g, d) && d.vramBytes > 0 && d.vramBytes >= (g.vramBytes ?? 1))
      if (dev === undefined) {
        const best = Math.max(0, ...free.gpus.filter(d => !taken.has(d.index) && matches(g, d)).map(d => d.vramBytes))
        throw new InsufficientResources(
          `${what} needs a GPU${g.vendor !== undefined ? ` by ${g.vendor}` : ''}${g.model !== undefined ? ` (${g.model})` : ''} with ${g.vramBytes !== undefined ? formatSize(g.vramBytes) : 'any amount'} of VRAM free; the most any free device has is ${formatSize(best)}`,
          { dimension: 'gpus', requested: g.vramBytes ?? null, available: best })
      }
      taken.add(dev.index)
      chosen.push({ ...dev, vramBytes: g.vramBytes ?? dev.vramBytes })
    }
  }
  chosen.sort((a, b) => a.index - b.index)
  return { cpuCores: r.cpuCores, ramBytes: r.ramBytes, diskBytes: r.diskBytes, gpus: chosen }
}

/** A request checked against its schema; refusals are `InvalidArgument`, never a ZodError. */
export function parseRequest (request: ResourceRequest): z.output<typeof ResourceRequestSchema> {
  const parsed = ResourceRequestSchema.safeParse(request)
  if (!parsed.success) throw new InvalidArgument(`bad resource request: ${z.prettifyError(parsed.error)}`)
  return parsed.data
}

function matches (want: GpuRequest, dev: Gpu): boolean {
  const eq = (a: string | undefined, b: string): boolean => a === undefined || a.toLowerCase() === b.toLowerCase()
  return eq(want.vendor, dev.vendor) && eq(want.model, dev.model)
}

function short (dimension: Dimension, requested: number, available: number, show: (x: number) => number, what: string): void {
  if (requested > available) {
    const text = (x: number): string => dimension === 'cpuCores' ? `${x} cores` : formatSize(x)
    throw new InsufficientResources(
      `${what} needs ${dimension} ${text(show(requested))}, ${text(show(Math.max(0, available)))} free`,
      { dimension, requested: show(requested), available: show(available) })
  }
}

/** True when `inner` fits in `outer` in every dimension (GPU VRAM per index). */
export function fits (inner: ResourceVector, outer: ResourceVector): boolean {
  return firstShort(inner, outer) === null
}

/** The first dimension where `inner` exceeds `outer`, with both figures; null when it fits. */
export function firstShort (inner: ResourceVector, outer: ResourceVector): { dimension: Dimension, requested: number, available: number, gpuIndex?: number } | null {
  if (toMilli(inner.cpuCores) > toMilli(outer.cpuCores)) return { dimension: 'cpuCores', requested: inner.cpuCores, available: outer.cpuCores }
  if (inner.ramBytes > outer.ramBytes) return { dimension: 'ramBytes', requested: inner.ramBytes, available: outer.ramBytes }
  if (inner.diskBytes > outer.diskBytes) return { dimension: 'diskBytes', requested: inner.diskBytes, available: outer.diskBytes }
  const cap = new Map(outer.gpus.map(g => [g.index, g.vramBytes]))
  for (const [index, vram] of vramByIndex([inner])) {
    const available = cap.get(index) ?? 0
    if (vram > available) return { dimension: 'gpus', requested: vram, available, gpuIndex: index }
  }
  return null
}

export function isZero (v: ResourceVector): boolean {
  return v.cpuCores === 0 && v.ramBytes === 0 && v.diskBytes === 0 && v.gpus.every(g => g.vramBytes === 0)
}
