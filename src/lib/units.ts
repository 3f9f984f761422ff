import { InvalidArgument } from './errors.js'

/**
 * One policy for quantities: bytes and cores inside, human forms at the edges.
 * Sizes accept binary (KiB, MiB, GiB, TiB) and decimal (KB, MB, GB, TB) suffixes. A size or a
 * duration given as text needs its unit: a bare `1.5` (meant as GiB, onboarded as 1 byte) or
 * `3600` (meant as seconds, taken as ms) was the commonest mistake. `0` alone is unambiguous.
 * `name` (a flag, e.g. `--ram`) is named in refusals.
 */
const SIZE_UNITS: Record<string, number> = {
  b: 1,
  k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40
}

export function parseSize (input: string | number, name = 'size'): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0) throw new InvalidArgument(`size must be a non-negative number of bytes, got ${input}`)
    return Math.floor(input)
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(input)
  if (m === null) throw new InvalidArgument(`${name}: not a size: '${input}' (examples: 512MiB, 4GiB, 20GB)`, { field: name })
  const unit = m[2].toLowerCase()
  if (unit === '' && Number(m[1]) !== 0) throw new InvalidArgument(`${name} ${input} needs a unit, e.g. ${m[1]}GiB or ${m[1]}MiB (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)`, { field: name })
  const mult = unit === '' ? 1 : SIZE_UNITS[unit]
  if (mult === undefined) throw new InvalidArgument(`${name}: unknown size unit '${m[2]}' in '${input}' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)`, { field: name })
  if (mult === 1 && !Number.isInteger(Number(m[1]))) throw new InvalidArgument(`${name}: ${input} is not a whole number of bytes`, { field: name })
  return Math.floor(Number(m[1]) * mult)
}

/** `23.5 GiB`, `512 MiB`, `0 B`: one decimal at most, for people (replies keep exact bytes). */
export function formatSize (bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = bytes
  let i = 0
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${Number(v.toFixed(1))} ${units[i]}`
}

/** `3m 20s`, `2h 5m`, `4d 1h`: the two largest units, for uptimes and ages. */
export function formatDuration (ms: number): string {
  const parts: Array<[number, string]> = [[86_400_000, 'd'], [3_600_000, 'h'], [60_000, 'm'], [1000, 's']]
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`
  const out: string[] = []
  let left = ms
  for (const [size, unit] of parts) {
    if (left >= size || out.length > 0) {
      out.push(`${Math.floor(left / size)}${unit}`)
      left %= size
    }
    if (out.length === 2) break
  }
  return out.join(' ')
}

/** Cores may be fractional (1.5); kept to milli-core precision so sums stay exact. */
export function parseCores (input: string | number): number {
  const v = typeof input === 'number' ? input : Number(input)
  if (!Number.isFinite(v) || v < 0 || (typeof input === 'string' && input.trim() === '')) {
    throw new InvalidArgument(`not a core count: '${input}' (examples: 1, 1.5, 4)`)
  }
  return Math.round(v * 1000) / 1000
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }

/** `250ms`, `30s`, `5m`, `1h`, `7d`, `1h30m`; a number (from code, not text) is milliseconds. */
export function parseDuration (input: string | number, name = 'duration'): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input <= 0) throw new InvalidArgument(`duration must be positive, got ${input}`)
    return input
  }
  const s = input.trim()
  if (/^\d+(\.\d+)?$/.test(s)) throw new InvalidArgument(`${name} ${s} needs a unit, e.g. ${s}s or ${s}m (ms, s, m, h, d, w; examples: 30s, 1h)`, { field: name })
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy
  let total = 0
  let consumed = 0
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    total += Number(m[1]) * DURATION_UNITS[m[2]]
    consumed = re.lastIndex
  }
  if (consumed !== s.length || total <= 0) throw new InvalidArgument(`${name}: not a duration: '${input}' (examples: 500ms, 30s, 5m, 1h, 7d)`, { field: name })
  return total
}
