import type { Actor } from '../actor/actor.js'
import { InvalidArgument } from '../lib/errors.js'
import type { Reservation, ResourceManager } from './resources/index.js'
import type { PortAllocator } from './ports/index.js'

/**
 * The ledger and the port table are each owned by an actor of their own (the resource manager and
 * the port allocator, children of the node's root actor with a mailbox of one): every change is a
 * message to that actor, handled one at a time, whoever asks for it. These are the views the
 * node's behaviours get: reads come from the service's in-memory mirror, at once; every change is
 * an invocation of the owning actor, which answers the very behaviour path the node exposes for it.
 */
export interface Owner {
  /** Who asks (the node's root actor) and who owns the state (the child actor). */
  route: () => { from: Actor, to: Actor }
  timeoutMs: number
}

async function ask<T> (o: Owner, path: string, payload: unknown): Promise<T> {
  const { from, to } = o.route()
  return await from.invoke<T>(to.handle, path, payload, { timeout: o.timeoutMs })
}

export function ledgerThroughActor (ledger: ResourceManager, owner: Owner): ResourceManager {
  return {
    start: async () => { await ledger.start() },
    stop: async () => { await ledger.stop() },
    status: () => ledger.status(),
    check: (request) => ledger.check(request),
    snapshot: () => ledger.snapshot(),
    sweep: async () => await ledger.sweep(),
    onChange: (listener) => ledger.onChange(listener),
    onboard: async (request, opts) => await ask(owner, '/dms/node/onboarding/onboard', { ...request, force: opts?.force }),
    offboard: async (opts) => await ask(owner, '/dms/node/onboarding/offboard', { force: opts?.force }),
    reserve: async (id, request, ttlMs) => await ask(owner, '/dms/node/resources/reserve', { id, resources: request, ttlMs }),
    reserveAll: async (items, ttlMs) => (await ask<{ reservations: Reservation[] }>(owner, '/dms/node/resources/reserve-all', { items: items.map(i => ({ id: i.id, resources: i.request })), ttlMs })).reservations,
    commit: async (id) => await ask(owner, '/dms/node/resources/commit', { id }),
    release: async (id, also) => {
      // another service's deletions cannot travel in a message: releaseWithPorts is the way
      if (also !== undefined && also.length > 0) throw new InvalidArgument('through the resource manager, ports are released with releaseWithPorts')
      return await ask(owner, '/dms/node/resources/release', { id })
    },
    // the resource manager releases with the port table it holds, in one batch
    releaseWithPorts: async (id) => await ask(owner, '/dms/node/resources/release', { id, ports: true })
  }
}

export function portsThroughActor (ports: PortAllocator, owner: Owner): PortAllocator {
  return {
    start: async () => { await ports.start() },
    stop: async () => { await ports.stop() },
    range: ports.range,
    of: (allocationId) => ports.of(allocationId),
    list: () => ports.list(),
    reserve: async (allocationId, request) => (await ask<{ ports: number[] }>(owner, '/dms/node/ports/reserve', { allocationId, ...request })).ports,
    release: async (allocationId) => (await ask<{ ports: number[] }>(owner, '/dms/node/ports/release', { allocationId })).ports,
    // Used by the resource manager's release of an id with its ports (one level batch): a
    // callback cannot travel in a message, so it runs under the port table's own lock, which
    // orders it with every change the port allocator makes.
    releaseWith: async (allocationId, write) => await ports.releaseWith(allocationId, write)
  }
}
