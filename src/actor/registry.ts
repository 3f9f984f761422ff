import { z } from 'zod'
import { requiredCapability, type AnyBehavior } from './behavior.js'

/** Thrown at start-up when two declarations claim one path (as libp2p's DuplicateProtocolHandlerError). */
export class DuplicateBehaviorError extends Error {
  override readonly name = 'DuplicateBehaviorError'
}
/** Thrown at start-up when a declaration needs a service the node does not provide. */
export class MissingServiceError extends Error {
  override readonly name = 'MissingServiceError'
}

export interface Registered {
  decl: AnyBehavior
  /** The services this behaviour declared, picked once at registration. */
  services: Record<PropertyKey, unknown>
  /** The capability an invoker must hold (null: none), resolved once. */
  capability: string | null
  /**
   * The request schema an invocation is parsed with: an object schema made strict, so that an
   * unknown field (a typo in `--data`) is a BadRequest naming it rather than silently ignored.
   * Gossip keeps `decl.request` as declared: a newer node's extra field must not get it rejected.
   */
  request: z.ZodType
}

/** Builds the dispatch table from declarations, picking each handler's services up front. */
export function buildRegistry (decls: readonly AnyBehavior[], services: object): Map<string, Registered> {
  const table = new Map<string, Registered>()
  for (const decl of decls) {
    if (table.has(decl.path)) throw new DuplicateBehaviorError(`behaviour ${decl.path} is declared twice`)
    const picked: Record<PropertyKey, unknown> = {}
    for (const name of decl.needs) {
      if (!(name in services)) throw new MissingServiceError(`behaviour ${decl.path} needs service '${String(name)}', which this node does not provide`)
      picked[name] = (services as Record<PropertyKey, unknown>)[name]
    }
    const request = decl.request instanceof z.ZodObject ? decl.request.strict() : decl.request
    table.set(decl.path, { decl, services: picked, capability: requiredCapability(decl), request })
  }
  return table
}

/** The known path nearest to `path` (edit distance at most a third of its length), for a hint. */
export function nearestPath (path: string, known: Iterable<string>): string | undefined {
  if (path.length > 256) return undefined
  let best: string | undefined
  let bestD = Math.max(2, Math.floor(path.length / 3)) + 1
  for (const k of known) {
    if (Math.abs(k.length - path.length) >= bestD) continue
    const d = distance(path, k)
    if (d < bestD) { best = k; bestD = d }
  }
  return best
}

/** Levenshtein distance, two rows. */
function distance (a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    prev = cur
  }
  return prev[b.length]
}
