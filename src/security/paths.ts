import { InvalidArgument } from '../lib/errors.js'
import { MAX_PATH_LENGTH } from './constants.js'

/**
 * Capability paths and topics: `/` or `/seg/seg/...`, segments non-empty and free of whitespace.
 * A path covers itself and everything below it, segment-wise: `/dms/node` covers
 * `/dms/node/peers/list` but `/dms/no` does not cover `/dms/node`; `/` covers everything.
 * Topics follow the same rules (`/nunet` covers `/nunet/hello`).
 */
const PATH = /^\/$|^(\/[^/\s]+)+$/

export function isPath (s: unknown): boolean {
  return typeof s === 'string' && s.length <= MAX_PATH_LENGTH && PATH.test(s)
}

export function assertPath (s: string, what = 'capability'): string {
  if (!isPath(s)) throw new InvalidArgument(`not a ${what} path: '${s.slice(0, 80)}' (use '/' or '/a/b', no empty segments, no trailing '/', at most ${MAX_PATH_LENGTH} characters)`)
  return s
}

/** Whether holding `parent` grants `child` (segment-wise prefix). */
export function implies (parent: string, child: string): boolean {
  if (parent === '/' || parent === child) return true
  return child.length > parent.length && child.startsWith(parent) && child.charCodeAt(parent.length) === 0x2f /* '/' */
}

/** Whether some path of `held` implies `wanted`. */
export function covers (held: readonly string[], wanted: string): boolean {
  for (const h of held) if (implies(h, wanted)) return true
  return false
}

/** Every path of `child` is implied by some path of `parent`: `child` does not widen `parent`. */
export function attenuates (parent: readonly string[], child: readonly string[]): boolean {
  for (const c of child) if (!covers(parent, c)) return false
  return true
}

/** The first path of `child` that `parent` does not cover (for error messages), if any. */
export function firstWidened (parent: readonly string[], child: readonly string[]): string | undefined {
  return child.find(c => !covers(parent, c))
}
