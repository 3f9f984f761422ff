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
    table.set(decl.path, { decl, services: picked, capability: requiredCapability(decl) })
  }
  return table
}
