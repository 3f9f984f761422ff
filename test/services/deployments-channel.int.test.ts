import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createNode, type Node } from '../../src/index.js'
import { newIdentity, type Identity } from '../../src/identity/identity.js'
import type { DmsError } from '../../src/lib/errors.js'
import { addAnchor, addRoot } from '../../src/security/index.js'
import { issueToken } from '../../src/security/ucan.js'
import { STATUS_CHANNEL, STATUS_CHANNEL_CAPS, type AllocationView, type StatusReport } from '../../src/services/provider/index.js'
import type { ChannelInfo } from '../../src/channel/index.js'
import type { DeploymentView } from '../../src/services/orchestrator/index.js'
import { heldFor, untilDeployment } from './deployment-helpers.js'

/**
 * Allocation status over the reliable channel (issue 8, specs/deployments.md "Status over a
 * channel"), on real nodes on loopback with level on disk: every transition of an allocation
 * reaches its orchestrator's node once, in order, also one made while that node was stopped; the
 * channels go when the deployment ends; a provider cannot report on an allocation not placed on
 * it. Node 0 deploys; node 1 (trusting node 0's key as a root) provides; node 2 holds a grant of
 * the status channel from node 0 but runs nothing of the deployment.
 */
const T = { timeout: 30_000 }
const CONFIG = { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, helloIntervalMs: 60_000, ports: { min: 44_000, max: 44_300 } }
const ensemble = (peer: string): string => `version: V1
allocations:
  x:
    executor: process
    resources: { cpu: { cores: 0.05 }, ram: { size: 16MiB }, disk: { size: 1MiB } }
    restart: { policy: never }
    failure_recovery: stay_down
    execution:
      cmd: [sh, -c, 'while true; do sleep 1; done']
nodes:
  n1: { allocations: [x], peer: ${peer} }
`

describe('deployment status over a channel', () => {
  let dir: string
  const ids: Identity[] = []
  const nodes: Node[] = []

  const start = async (i: number): Promise<Node> => {
    const bootstrap = i === 0 ? (nodes.length > 1 ? [nodes[1].addrs()[0]] : []) : [nodes[0].addrs()[0]]
    return await createNode({ dataDir: join(dir, `n${i}`), identity: ids[i], config: { ...CONFIG, bootstrap } })
  }
  const statusChannels = async (n: Node): Promise<ChannelInfo[]> =>
    (await n.invoke<{ channels: ChannelInfo[] }>(n.did, '/dms/node/channels/list', {}, T)).channels.filter(c => c.name === STATUS_CHANNEL)
  const allocation = async (n: Node, id: string): Promise<AllocationView> =>
    (await n.invoke<{ allocations: AllocationView[] }>(n.did, '/dms/node/allocations/list', { id }, T)).allocations[0]
  /** Bounded: until the provider's status channels are all acknowledged (no event says so across nodes). */
  const drained = async (n: Node): Promise<ChannelInfo[]> => {
    let cs = await statusChannels(n)
    for (let i = 0; i < 200 && cs.some(c => (c.outbox ?? 0) > 0); i++) {
      await new Promise(resolve => setTimeout(resolve, 50))
      cs = await statusChannels(n)
    }
    return cs
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dms-status-chan-'))
    for (let i = 0; i < 3; i++) ids.push(await newIdentity())
    await addRoot(join(dir, 'n1'), 'dms', ids[0].did)
    // node 2 may open the status channel to node 0 (as a provider of it would), nothing more
    const grant = await issueToken(ids[0], { audience: ids[2].did, caps: STATUS_CHANNEL_CAPS, node: ids[0].did, exp: Math.floor(Date.now() / 1000) + 3600 })
    await addAnchor(join(dir, 'n2'), 'dms', 'provide', grant)
    for (let i = 0; i < 3; i++) nodes.push(await start(i))
    for (const n of nodes.slice(0, 2)) await n.invoke(n.did, '/dms/node/onboarding/onboard', { cpuCores: 0.5, ramBytes: 256 * 2 ** 20, diskBytes: 64 * 2 ** 20, gpus: [] }, T)
  })
  afterAll(async () => {
    for (const n of nodes) {
      for (const x of (await n.invoke<{ allocations: AllocationView[] }>(n.did, '/dms/node/allocations/list', {}, T).catch(() => ({ allocations: [] }))).allocations) {
        if (x.status === 'running' || x.status === 'starting') await n.invoke(n.did, '/dms/node/allocation/stop', { id: x.id, graceMs: 0 }, T).catch(() => {})
      }
    }
    for (const n of [...nodes].reverse()) await n.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('a transition made while the orchestrator\'s node is stopped reaches it after it returns, once, in order; the channels go with the deployment', async () => {
    let [a, b] = nodes
    const baseline = { a: await statusChannels(a), b: await statusChannels(b) }
    const { ensembleId: id } = await a.invoke<{ ensembleId: string }>(a.did, '/dms/node/deployment/new', { ensemble: ensemble(b.peerId), bidWindowMs: 300 }, T)
    const running = await untilDeployment(a, id, v => v.status === 'Running' || v.status === 'Failed')
    expect(running.status, running.reason).toBe('Running')
    const allocId = running.allocations.x.id as string

    // the provider's allocation actor sends, the orchestrator's node receives, and it heard pending → starting → running
    expect(await drained(b)).toEqual([expect.objectContaining({ role: 'sender', peer: a.peerId, status: 'open', outbox: 0 })])
    expect(await statusChannels(a)).toEqual([expect.objectContaining({ role: 'receiver', peer: b.peerId })])
    const seen = (await a.invoke<DeploymentView>(a.did, '/dms/node/deployment/status', { id }, T)).allocations.x.reports ?? []
    expect(seen.map(r => [r.n, r.status])).toEqual([[1, 'pending'], [2, 'starting'], [3, 'running']])

    // the orchestrator's node stops; meanwhile the allocation is stopped on its provider
    await a.stop()
    const stopped = await b.invoke<AllocationView>(b.did, '/dms/node/allocation/stop', { id: allocId, graceMs: 0 }, T)
    expect(stopped.status).toBe('stopped')
    // what it pushed waits in the outbox on disk, unacknowledged
    const waiting = await statusChannels(b)
    expect(waiting[0].outbox).toBeGreaterThanOrEqual(1)

    // the orchestrator's node comes back from its data dir: the deployment resumes, the report arrives
    a = nodes[0] = await start(0)
    const ended = await untilDeployment(a, id, v => v.status === 'Completed' || v.status === 'Failed')
    expect(ended.status, ended.reason).toBe('Completed')
    expect(ended.reason).toMatch(/stayed down/)
    expect(await drained(b)).toEqual([expect.objectContaining({ outbox: 0, failed: 0 })])
    const view = await allocation(b, allocId)
    const reports = (await a.invoke<DeploymentView>(a.did, '/dms/node/deployment/status', { id }, T)).allocations.x.reports ?? []
    // every transition the provider made, each once, in order, numbered as the provider numbers them
    expect(reports.map(r => r.n)).toEqual(Array.from({ length: view.transitionCount as number }, (_, i) => i + 1))
    expect(reports.map(r => [r.status, r.reason])).toEqual(view.transitions.map(t => [t.status, t.reason]))
    expect(reports[reports.length - 1].status).toBe('stopped')

    // shut down: the provider discards its channel (outbox included), the orchestrator forgets its end
    const done = await a.invoke<DeploymentView>(a.did, '/dms/node/deployment/shutdown', { id }, T)
    expect(done.status).toBe('Completed')
    expect(await heldFor(b, id)).toEqual([])
    expect(await statusChannels(b)).toEqual(baseline.b)
    // the orchestrator's node forgets the receiver as the orchestration retires (just after the answer)
    let left = await statusChannels(a)
    for (let i = 0; i < 100 && left.length > baseline.a.length; i++) { await new Promise(resolve => setTimeout(resolve, 50)); left = await statusChannels(a) }
    expect(left).toEqual(baseline.a)
  })

  it('an allocation on the orchestrator\'s own node reports on the channel too, and it goes at shutdown', async () => {
    const a = nodes[0]
    const baseline = await statusChannels(a)
    const { ensembleId: id } = await a.invoke<{ ensembleId: string }>(a.did, '/dms/node/deployment/new', { ensemble: ensemble(a.peerId), bidWindowMs: 300 }, T)
    const running = await untilDeployment(a, id, v => v.status === 'Running' || v.status === 'Failed')
    expect(running.status, running.reason).toBe('Running')
    const mine = (await drained(a)).filter(c => c.role === 'sender')
    expect(mine).toEqual([expect.objectContaining({ peer: a.peerId, status: 'open', outbox: 0 })])
    const reports = (await a.invoke<DeploymentView>(a.did, '/dms/node/deployment/status', { id }, T)).allocations.x.reports ?? []
    expect(reports.map(r => [r.n, r.status])).toEqual([[1, 'pending'], [2, 'starting'], [3, 'running']])
    expect((await a.invoke<DeploymentView>(a.did, '/dms/node/deployment/shutdown', { id }, T)).status).toBe('Completed')
    let left = await statusChannels(a)
    for (let i = 0; i < 100 && left.length > baseline.length; i++) { await new Promise(resolve => setTimeout(resolve, 50)); left = await statusChannels(a) }
    expect(left).toEqual(baseline)
  })

  it('refuses a report from a provider the allocation is not placed on, and goes on', async () => {
    const [a, b, c] = nodes
    const { ensembleId: id } = await a.invoke<{ ensembleId: string }>(a.did, '/dms/node/deployment/new', { ensemble: ensemble(b.peerId), bidWindowMs: 300 }, T)
    const running = await untilDeployment(a, id, v => v.status === 'Running' || v.status === 'Failed')
    expect(running.status, running.reason).toBe('Running')
    const refusals: Array<{ err: DmsError, seq: number | undefined }> = []
    const ch = c.channels.open(a.peerId, STATUS_CHANNEL, { onRefused: (err, seq) => { refusals.push({ err, seq }) } })
    const forged: StatusReport = { ensembleId: id, name: 'x', id: running.allocations.x.id as string, n: 99, status: 'failed', reason: 'forged', at: Date.now() }
    const { seq } = await ch.send(forged)
    const unknown = await ch.send({ ...forged, ensembleId: 'no-such-deployment' })
    await ch.whenAcked(unknown.seq)
    expect(refusals.map(r => [r.seq, r.err.name])).toEqual([[seq, 'Unauthorized'], [unknown.seq, 'NotFound']])
    const v = await a.invoke<DeploymentView>(a.did, '/dms/node/deployment/status', { id }, T)
    expect(v.status).toBe('Running')
    expect(v.allocations.x.status).toBe('running')
    expect((v.allocations.x.reports ?? []).map(r => r.reason)).not.toContain('forged')
    await c.channels.discard(a.peerId, STATUS_CHANNEL)
    expect((await a.invoke<DeploymentView>(a.did, '/dms/node/deployment/shutdown', { id }, T)).status).toBe('Completed')
  })
})
