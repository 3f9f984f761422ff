import { InvalidArgument } from './errors.js'

/**
 * One policy for quantities: bytes and cores inside, human forms at the edges.
 * Sizes accept binary (KiB, MiB, GiB, TiB) and decimal (KB, MB, GB, TB) suffixes, or plain bytes.
 */
const SIZE_UNITS: Record<string, number> = {
  b: 1,
  k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40
}

export function parseSize (input: string | number): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0) throw new InvalidArgument(`size must be a non-negative number of bytes, got ${input}`)
    return Math.floor(input)
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(input)
  if (m === null) throw new InvalidArgument(`not a size: '${input}' (examples: 512MiB, 4GiB, 20GB, 1048576)`)
  const unit = m[2].toLowerCase()
  const mult = unit === '' ? 1 : SIZE_UNITS[unit]
  if (mult === undefined) throw new InvalidArgument(`unknown size unit '${m[2]}' in '${input}' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)`)
  return Math.floor(Number(m[1]) * mult)
}

export function formatSize (bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = bytes
  let i = 0
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${Number.isInteger(v) ? v : v.toFixed(2)}${units[i]}`
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

/** `250ms`, `30s`, `5m`, `1h`, `7d`, `1h30m`, or a bare number of milliseconds. */
export function parseDuration (input: string | number): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input <= 0) throw new InvalidArgument(`duration must be positive, got ${input}`)
    return input
  }
  const s = input.trim()
  if (/^\d+$/.test(s)) return parseDuration(Number(s))
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy
  let total = 0
  let consumed = 0
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    total += Number(m[1]) * DURATION_UNITS[m[2]]
    consumed = re.lastIndex
  }
  if (consumed !== s.length || total <= 0) throw new InvalidArgument(`not a duration: '${input}' (examples: 500ms, 30s, 5m, 1h, 7d)`)
  return total
}
