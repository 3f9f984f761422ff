import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createNode, type Node } from '../../src/index.js'
import { newIdentity } from '../../src/identity/identity.js'
import { issueToken } from '../../src/security/ucan.js'
import type { Handle } from '../../src/actor/types.js'
import type { LedgerSnapshot } from '../../src/services/resources/index.js'
import type { AllocateReply, AllocationView, CommitReply } from '../../src/services/provider/index.js'

/**
 * The provider side of deployments through the node's public surface (issue 14): commit, allocate
 * and revert as DMS names them, allocation actors with keys of their own, and every bad input
 * refused at once, typed, with nothing left reserved.
 */
describe('deployments on a provider node', () => {
  let dir: string
  let node: Node
  let other: Node
  const PORTS = { min: 41_000, max: 41_200 }
  const config = { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, helloIntervalMs: 60_000, ports: PORTS }
  const T = { timeout: 30_000 }
  let seq = 0
  const ensemble = (): string => `e${++seq}-${Date.now() % 100_000}`
  const res = { cpuCores: 0.1, ramBytes: 32 * 2 ** 20 }

  const call = async <R>(path: string, payload: unknown, to: string | Handle = node.did): Promise<R> => await node.invoke<R>(to, path, payload, T)
  const ledger = async (): Promise<LedgerSnapshot> => await call<LedgerSnapshot>('/dms/node/resources/ledger', {})
  const leases = async (): Promise<Array<{ port: number, allocationId: string }>> => (await call<{ leases: Array<{ port: number, allocationId: string }> }>('/dms/node/ports/list', {})).leases
  const nothingHeld = async (ensembleId: string): Promise<void> => {
    const l = await ledger()
    expect([...l.reservations, ...l.allocations].filter(r => r.id.startsWith(`${ensembleId}.`))).toEqual([])
    expect((await leases()).filter(p => p.allocationId.startsWith(`${ensembleId}.`))).toEqual([])
  }
  /** commit + allocate one allocation; returns its id and handle. */
  const deploy = async (spec: Record<string, unknown>, ports: unknown[] = []): Promise<{ ensembleId: string, id: string, handle: Handle }> => {
    const ensembleId = ensemble()
    await call<CommitReply>('/dms/deployment/commit', { ensembleId, allocations: [{ name: 'main', resources: res, ports }] })
    const { allocations: [a] } = await call<AllocateReply>('/dms/deployment/allocate', { ensembleId, allocations: [{ name: 'main', spec }] })
    return { ensembleId, id: a.id, handle: a.handle }
  }
  const waitEnd = async (handle: Handle): Promise<AllocationView> => await call<AllocationView>('/dms/allocation/status', { wait: true }, handle)

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dms-provider-'))
    node = await createNode({ dataDir: join(dir, 'a'), passphrase: 'pw', config })
    other = await createNode({ dataDir: join(dir, 'b'), passphrase: 'pw', config: { ...config, bootstrap: [node.addrs()[0]] } })
    await call('/dms/node/onboarding/onboard', { cpuCores: 1, ramBytes: 2 ** 30, diskBytes: 2 ** 20, gpus: [] })
  })
  afterAll(async () => {
    // stop what still runs: a node's stop leaves workloads running for the next start to adopt
    for (const a of node !== undefined ? (await call<{ allocations: AllocationView[] }>('/dms/node/allocations/list', {})).allocations : []) {
      if (a.status === 'running' || a.status === 'starting') await call('/dms/node/allocation/stop', { id: a.id, graceMs: 0 })
    }
    await other?.stop()
    await node?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('runs a task to completion through its actor, which then gives back its resources and ports', async () => {
    const { ensembleId, id, handle } = await deploy({ type: 'task', command: ['sh', '-c', 'echo "out $DMS_PORTS"; echo err >&2; exit 0'] }, [{ private: 80 }])
    expect(handle).toMatchObject({ did: node.did, addr: { peer: node.peerId, inbox: `alloc/${id}` } })
    expect(handle.id).not.toBe(node.did)
    const l = await ledger()
    expect(l.allocations.map(a => a.id)).toContain(id)
    const started = await call<AllocationView>('/dms/allocation/start', {}, handle)
    expect(['starting', 'running', 'completed']).toContain(started.status)
    const end = await waitEnd(handle)
    expect(end).toMatchObject({ id, status: 'completed', exitCode: 0, type: 'task', executor: 'process' })
    expect(end.transitions.map(t => t.status)).toEqual(['pending', 'starting', 'running', 'completed'])
    const out = await call<{ data: string, ended: boolean }>('/dms/allocation/logs', {}, handle)
    expect(out.data).toBe(`out ${end.ports[0].public}\n`)
    expect(out.ended).toBe(true)
    expect((await call<{ data: string }>('/dms/allocation/logs', { stream: 'stderr' }, handle)).data).toBe('err\n')
    // released by itself, though the commit still stands until reverted
    await nothingHeld(ensembleId)
    expect((await call<{ allocations: AllocationView[] }>('/dms/node/allocations/list', { id })).allocations[0].status).toBe('completed')
    await expect(call('/dms/deployment/revert', { ensembleId })).resolves.toMatchObject({ allocations: [id] })
    expect((await call<{ allocations: AllocationView[] }>('/dms/node/allocations/list', { id })).allocations).toEqual([])
    // idempotent
    await expect(call('/dms/deployment/revert', { ensembleId })).resolves.toEqual({ ensembleId, allocations: [], reservations: [] })
  })

  it('answers a failed task with its exit code, and a service is stopped, restarted and long-polled for logs', async () => {
    const failed = await deploy({ type: 'task', command: ['sh', '-c', 'exit 3'] })
    await call('/dms/allocation/start', {}, failed.handle)
    expect(await waitEnd(failed.handle)).toMatchObject({ status: 'failed', exitCode: 3 })

    const svc = await deploy({ type: 'service', command: ['sh', '-c', 'echo ready; exec sleep 600'], restart: { policy: 'never' } })
    const first = call<{ data: string }>('/dms/allocation/logs', { wait: true }, svc.handle) // waits for output
    await call('/dms/allocation/start', {}, svc.handle)
    expect((await first).data).toBe('ready\n')
    // a read-only long poll does not hold up a stop (the actor handles changes one at a time)
    const polling = call<{ data: string, ended: boolean }>('/dms/allocation/logs', { offset: 6, wait: true }, svc.handle)
    await call('/dms/allocation/restart', {}, svc.handle)
    expect(await polling).toMatchObject({ data: 'ready\n' })
    const stopped = await call<AllocationView>('/dms/allocation/stop', { graceMs: 1_000 }, svc.handle)
    expect(stopped.status).toBe('stopped')
    await nothingHeld(svc.ensembleId)
  })

  it('makes a commit its caller\'s: no one else may allocate or revert it', async () => {
    const ensembleId = ensemble()
    await call('/dms/deployment/commit', { ensembleId, allocations: [{ name: 'main', resources: res }] })
    // `other` holds a capability for deployments on `node`, granted by the node's user root... as
    // the node itself here: a token from the node's key covers everything on it.
    const nodeKey = (node.actors.system.root.identity)
    const token = await issueToken(nodeKey, { audience: other.did, caps: ['/dms/deployment'], exp: Math.floor(Date.now() / 1000) + 3600 })
    const asOther = async (path: string, payload: unknown): Promise<unknown> => await other.invoke(node.did, path, payload, { ...T, cap: [token] })
    await expect(asOther('/dms/deployment/allocate', { ensembleId, allocations: [{ name: 'main', spec: { type: 'task', command: ['true'] } }] })).rejects.toMatchObject({ name: 'Unauthorized', fields: { reason: 'not-owner' } })
    await expect(asOther('/dms/deployment/revert', { ensembleId })).rejects.toMatchObject({ name: 'Unauthorized', fields: { reason: 'not-owner' } })
    await expect(asOther('/dms/deployment/commit', { ensembleId, allocations: [{ name: 'main', resources: res }] })).rejects.toMatchObject({ name: 'Unauthorized', fields: { reason: 'not-owner' } })
    // its own commit works, and the allocation actor obeys its owner
    const mine = ensemble()
    await asOther('/dms/deployment/commit', { ensembleId: mine, allocations: [{ name: 'main', resources: res }] })
    const { allocations: [a] } = await asOther('/dms/deployment/allocate', { ensembleId: mine, allocations: [{ name: 'main', spec: { type: 'task', command: ['true'] } }] }) as AllocateReply
    expect(a.handle.did).toBe(other.did)
    await other.invoke(a.handle, '/dms/allocation/start', {}, T)
    expect(await other.invoke(a.handle, '/dms/allocation/status', { wait: true }, T)).toMatchObject({ status: 'completed', owner: other.did })
    await asOther('/dms/deployment/revert', { ensembleId: mine })
    await call('/dms/deployment/revert', { ensembleId })
    await nothingHeld(ensembleId)
  })

  it('releases a commit that expires unallocated, ports included', async () => {
    const ensembleId = ensemble()
    await call('/dms/deployment/commit', { ensembleId, ttlMs: 300, allocations: [{ name: 'main', resources: res, ports: [{ private: 80 }] }] })
    expect((await leases()).some(p => p.allocationId === `${ensembleId}.main`)).toBe(true)
    // the sweep runs every 2 s: wait for its effect, bounded
    for (let i = 0; i < 100 && (await leases()).some(p => p.allocationId === `${ensembleId}.main`); i++) await new Promise(resolve => setTimeout(resolve, 100))
    await nothingHeld(ensembleId)
    await expect(call('/dms/deployment/allocate', { ensembleId, allocations: [{ name: 'main', spec: { type: 'task', command: ['true'] } }] })).rejects.toMatchObject({ name: 'NotFound' })
  })

  it('refuses bad input at once, typed and naming the field, leaving nothing reserved', async () => {
    const e1 = ensemble()
    await expect(call('/dms/deployment/commit', { ensembleId: e1, allocations: [{ name: 'main', resources: { cpuCores: 64 } }] }))
      .rejects.toMatchObject({ name: 'InsufficientResources' })
    await nothingHeld(e1)
    // all or nothing: the second allocation does not fit, the first is released
    await expect(call('/dms/deployment/commit', { ensembleId: e1, allocations: [{ name: 'a', resources: res }, { name: 'b', resources: { cpuCores: 5 } }] }))
      .rejects.toMatchObject({ name: 'InsufficientResources' })
    await nothingHeld(e1)
    await expect(call('/dms/deployment/commit', { ensembleId: e1, allocations: [{ name: 'main', resources: res, extra: 1 }] }))
      .rejects.toMatchObject({ name: 'BadRequest' })
    // a static port in use on the OS
    const busy: Server = createServer()
    await new Promise<void>(resolve => busy.listen(PORTS.min + 7, '0.0.0.0', resolve))
    try {
      await expect(call('/dms/deployment/commit', { ensembleId: e1, allocations: [{ name: 'main', resources: res, ports: [{ private: 80, public: PORTS.min + 7 }] }] }))
        .rejects.toMatchObject({ name: 'PortUnavailable' })
    } finally { busy.close() }
    await nothingHeld(e1)

    const bad = async (spec: Record<string, unknown>): Promise<unknown> => {
      const ensembleId = ensemble()
      await call('/dms/deployment/commit', { ensembleId, allocations: [{ name: 'main', resources: res }] })
      const err = await call('/dms/deployment/allocate', { ensembleId, allocations: [{ name: 'main', spec }] }).catch((e: unknown) => e)
      await call('/dms/deployment/revert', { ensembleId })
      await nothingHeld(ensembleId)
      return err
    }
    expect(await bad({ type: 'task', executor: 'nope', command: ['true'] })).toMatchObject({ name: 'BadRequest', fields: { field: 'allocations.main.spec.executor' } })
    expect(await bad({ type: 'task', command: ['true'], colour: 'red' })).toMatchObject({ name: 'BadRequest', fields: { field: 'allocations.main.spec.colour' } })
    expect(await bad({ type: 'task', command: ['true'], resources: { cpuCores: 1 } })).toMatchObject({ name: 'BadRequest', fields: { field: 'allocations.main.spec.resources' } })

    // a command that does not exist: the start is refused, the allocation failed, nothing held
    const missing = await deploy({ type: 'task', command: ['/no/such/program'] })
    await expect(call('/dms/allocation/start', {}, missing.handle)).rejects.toMatchObject({ name: 'BadRequest' })
    expect(await call<AllocationView>('/dms/allocation/status', {}, missing.handle)).toMatchObject({ status: 'failed' })
    await nothingHeld(missing.ensembleId)
  })

  it('says which executors work here', async () => {
    const status = await call<{ executors: Array<{ name: string, available: boolean }> }>('/dms/node/status', {})
    expect(status.executors.find(e => e.name === 'process')).toMatchObject({ available: true })
    expect(status.executors.map(e => e.name)).toEqual(['process', 'docker', 'vm'])
  })

  it('re-adopts a running service after the node restarts, with the same actor key', async () => {
    const svc = await deploy({ type: 'service', command: ['sleep', '600'] })
    await call('/dms/allocation/start', {}, svc.handle)
    const before = (await call<{ allocations: AllocationView[] }>('/dms/node/allocations/list', { id: svc.id })).allocations[0]
    expect(before.status).toBe('running')
    await other.stop()
    await node.stop()
    node = await createNode({ dataDir: join(dir, 'a'), passphrase: 'pw', config })
    other = await createNode({ dataDir: join(dir, 'b'), passphrase: 'pw', config: { ...config, bootstrap: [node.addrs()[0]] } })
    const after = (await call<{ allocations: AllocationView[] }>('/dms/node/allocations/list', { id: svc.id })).allocations[0]
    expect(after).toMatchObject({ status: 'running', handle: svc.handle })
    expect(await call<AllocationView>('/dms/allocation/stop', { graceMs: 500 }, svc.handle)).toMatchObject({ status: 'stopped' })
    await call('/dms/deployment/revert', { ensembleId: svc.ensembleId })
    await nothingHeld(svc.ensembleId)
  })
})
