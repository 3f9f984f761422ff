import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createNode, type Node } from '../../src/index.js'
import type { ActorInfo } from '../../src/actor/system.js'

/**
 * The node's children (issue 14): the ledger and the port table each belong to an actor of their
 * own, with its own key and a mailbox of one; the node's behaviours send every change to them.
 */
describe('resource-manager and port-allocator actors', () => {
  let dir: string
  let node: Node
  const config = { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, helloIntervalMs: 60_000, ports: { min: 40_000, max: 40_100 } }
  const actors = async (): Promise<ActorInfo[]> => (await node.invoke<{ actors: ActorInfo[] }>(node.did, '/dms/node/actors/list', {}, { timeout: 10_000 })).actors
  const byKind = (list: ActorInfo[], kind: string): ActorInfo => list.find(a => a.kind === kind)!

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dms-children-'))
    node = await createNode({ dataDir: dir, passphrase: 'pw', config })
  })
  afterAll(async () => {
    await node?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('lists the node and its children with handle, kind and mailbox depth', async () => {
    const list = await actors()
    expect(list.map(a => a.kind).sort()).toEqual(['node', 'port-allocator', 'resource-manager'])
    const rm = byKind(list, 'resource-manager')
    expect(rm.handle).toMatchObject({ did: node.did, addr: { peer: node.peerId, inbox: 'resources' } })
    expect(rm.handle.id).not.toBe(node.did) // a key of its own
    expect(byKind(list, 'node').handle).toEqual(node.self)
  })

  it('sends every change of the ledger and the port table to the actor that owns it', async () => {
    const before = await actors()
    await node.invoke(node.did, '/dms/node/onboarding/onboard', { cpuCores: 1, ramBytes: 2 ** 28, diskBytes: 2 ** 28, gpus: [] }, { timeout: 30_000 })
    await node.invoke(node.did, '/dms/node/resources/reserve', { id: 'r1', resources: { cpuCores: 0.5 }, ttlMs: 60_000 }, { timeout: 10_000 })
    const leased = await node.invoke<{ ports: number[] }>(node.did, '/dms/node/ports/reserve', { allocationId: 'r1', dynamic: 2 }, { timeout: 10_000 })
    expect(leased.ports).toHaveLength(2)
    const after = await actors()
    expect(byKind(after, 'resource-manager').handled - byKind(before, 'resource-manager').handled).toBe(2)
    expect(byKind(after, 'port-allocator').handled - byKind(before, 'port-allocator').handled).toBe(1)
    // refusals come back typed through the owner
    await expect(node.invoke(node.did, '/dms/node/resources/reserve', { id: 'r2', resources: { cpuCores: 64 }, ttlMs: 60_000 }, { timeout: 10_000 })).rejects.toMatchObject({ name: 'InsufficientResources' })
    const list = await node.invoke<{ leases: Array<{ port: number, allocationId: string }> }>(node.did, '/dms/node/ports/list', {}, { timeout: 10_000 })
    expect(list.leases.filter(l => l.allocationId === 'r1').map(l => l.port)).toEqual(leased.ports)
    await expect(node.invoke(node.did, '/dms/node/ports/release', { allocationId: 'r1' }, { timeout: 10_000 })).resolves.toEqual({ ports: leased.ports })
  })

  it('keeps each child\'s key across restarts', async () => {
    const first = byKind(await actors(), 'resource-manager').handle.id
    await node.stop()
    node = await createNode({ dataDir: dir, passphrase: 'pw', config })
    expect(byKind(await actors(), 'resource-manager').handle.id).toBe(first)
  })
})
