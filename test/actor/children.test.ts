import { z } from 'zod'
import { describe, expect, it } from 'vitest'
import type { AnyBehavior } from '../../src/actor/behavior.js'
import { LocalHub } from '../../src/actor/local-transport.js'
import { ActorSystem } from '../../src/actor/system.js'
import { newIdentity, type Identity } from '../../src/identity/identity.js'
import { Unauthorized } from '../../src/lib/errors.js'

/**
 * Child actors as stateful children need them (issue 14): a mailbox and limits of their own, a
 * stop that refuses what waits, fails its own calls and releases its topics, a DID that names the
 * child and not a node, and a controller that may invoke it.
 */
let gate: { wait: Promise<void>, release: () => void, entered: () => void } | undefined
const slow = { path: '/test/slow', describe: 'waits for the gate', request: z.object({}), response: z.object({ n: z.number() }), needs: [], handler: async () => { gate?.entered(); await gate?.wait; return { n: 1 } } }
const who = { path: '/test/who', describe: 'names the actor', request: z.object({}), response: z.object({ inbox: z.string() }), needs: ['inbox'], handler: (s: { inbox: string }) => ({ inbox: s.inbox }) }
const hear = { path: '/broadcast/child', topic: '/test/child', capability: false as const, describe: 'a topic of the child', request: z.object({}), response: z.object({}), needs: [], handler: () => ({}) }
const BEHAVIORS = [slow, who, hear] as unknown as AnyBehavior[]

/** Only the node itself is trusted: anyone else is refused unless the actor obeys them. */
const nodeOnly = (node: Identity) => ({ authorize: async (req: { invoker: string }) => { if (req.invoker !== node.did) throw new Unauthorized('no', { reason: 'no-proof' }) } })

async function setup (): Promise<{ hub: LocalHub, node: ActorSystem, peer: ActorSystem, nodeId: Identity, peerId: Identity }> {
  const hub = new LocalHub()
  const [nodeId, peerId] = await Promise.all([newIdentity(), newIdentity()])
  const node = new ActorSystem({ identity: nodeId, transport: hub.transport(nodeId.peerId), authorizer: nodeOnly(nodeId), behaviors: [], services: {} })
  const peer = new ActorSystem({ identity: peerId, transport: hub.transport(peerId.peerId), authorizer: { authorize: async () => {} }, behaviors: [], services: {} })
  return { hub, node, peer, nodeId, peerId }
}

function held (): Promise<void> {
  let entered!: () => void
  const running = new Promise<void>(resolve => { entered = resolve })
  let release!: () => void
  gate = { wait: new Promise<void>(resolve => { release = resolve }), release: () => release(), entered }
  return running
}

describe('child actors', () => {
  it('have a mailbox of their own: a child handling one message at a time refuses the next, the node is not held up', async () => {
    const { node, hub } = await setup()
    const key = await newIdentity()
    const child = node.spawn({ inbox: 'c1', identity: key, kind: 'worker', behaviors: BEHAVIORS, services: { inbox: 'c1' }, mailbox: { concurrency: 1, capacity: 0 } })
    node.root.register(who as unknown as AnyBehavior, { inbox: 'root' })
    const running = held()
    const first = node.root.invoke(child.handle, '/test/slow', {}, { timeout: 10_000 })
    await running
    await expect(node.root.invoke(child.handle, '/test/slow', {}, { timeout: 10_000 })).rejects.toMatchObject({ name: 'Overloaded' })
    await expect(node.root.invoke(node.root.handle, '/test/who', {}, { timeout: 10_000 })).resolves.toEqual({ inbox: 'root' })
    gate?.release()
    await expect(first).resolves.toEqual({ n: 1 })
    void hub
  })

  it('are named by their DID: a local child\'s DID is the child, not a node', async () => {
    const { node } = await setup()
    const key = await newIdentity()
    node.spawn({ inbox: 'c2', identity: key, kind: 'worker', behaviors: BEHAVIORS, services: { inbox: 'c2' } })
    expect(node.resolveDestination(key.did)).toMatchObject({ id: key.did, addr: { inbox: 'c2' } })
    await expect(node.root.invoke(key.did, '/test/who', {}, { timeout: 10_000 })).resolves.toEqual({ inbox: 'c2' })
  })

  it('obey their controller, and refuse others without a capability', async () => {
    const { node, peer, peerId } = await setup()
    const owned = node.spawn({ inbox: 'c3', identity: await newIdentity(), kind: 'worker', controller: peerId.did, behaviors: BEHAVIORS, services: { inbox: 'c3' } })
    await expect(peer.root.invoke(owned.handle, '/test/who', {}, { timeout: 10_000 })).resolves.toEqual({ inbox: 'c3' })
    const notOwned = node.spawn({ inbox: 'c4', identity: await newIdentity(), kind: 'worker', behaviors: BEHAVIORS, services: { inbox: 'c4' } })
    await expect(peer.root.invoke(notOwned.handle, '/test/who', {}, { timeout: 10_000 })).rejects.toMatchObject({ name: 'Unauthorized' })
  })

  it('stop: refuses what waits, fails the child\'s own calls, releases its topics, forgets its inbox', async () => {
    const { node, peer, hub } = await setup()
    const key = await newIdentity()
    const child = node.spawn({ inbox: 'c5', identity: key, kind: 'worker', behaviors: BEHAVIORS, services: { inbox: 'c5' }, mailbox: { concurrency: 1, capacity: 4 } })
    expect(hub.get(node.peerId)?.topics.has('/test/child')).toBe(true)
    const running = held()
    const first = node.root.invoke(child.handle, '/test/slow', {}, { timeout: 10_000 })
    await running
    const queued = node.root.invoke(child.handle, '/test/slow', {}, { timeout: 10_000 }).catch((e: unknown) => e)
    // local delivery takes a few turns: wait (bounded) until the second call waits in the mailbox
    for (let i = 0; i < 1_000 && child.mailbox.depth.queued < 1; i++) await new Promise(resolve => setImmediate(resolve))
    expect(child.mailbox.depth).toEqual({ running: 1, queued: 1 })
    // the child's own call to a peer that never answers it
    peer.root.register({ ...slow, path: '/test/never', handler: async () => await new Promise(() => {}) } as unknown as AnyBehavior, {})
    const ownCall = child.invoke(peer.root.handle, '/test/never', {}, { timeout: 10_000 }).catch((e: unknown) => e)
    const stopping = child.stop('refuse')
    expect(await queued).toMatchObject({ name: 'NotRunning' })
    expect(await ownCall).toMatchObject({ name: 'Timeout' })
    expect(hub.get(node.peerId)?.topics.has('/test/child')).toBe(false)
    gate?.release()
    await stopping
    await expect(first).resolves.toEqual({ n: 1 })
    await expect(node.root.invoke(child.handle, '/test/who', {}, { timeout: 10_000 })).rejects.toMatchObject({ name: 'UnknownBehavior', fields: { inbox: 'c5' } })
    expect(node.list().map(a => a.kind)).toEqual(['node'])
  })
})
