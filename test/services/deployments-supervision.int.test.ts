import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createNode, type Node } from '../../src/index.js'
import { newIdentity } from '../../src/identity/identity.js'
import type { Identity } from '../../src/identity/identity.js'
import { addRoot } from '../../src/security/index.js'
import type { AllocationView } from '../../src/services/provider/index.js'
import { heldFor, untilDeployment } from './deployment-helpers.js'
import type { DeploymentView, Manifest } from '../../src/services/orchestrator/index.js'

/**
 * Supervision of running deployments (issue 15) on four real nodes on loopback: each strategy
 * applied to a real failed workload, the restart limit, the re-placement of what a provider ran
 * when it stops answering (and that provider releasing it all when it comes back and learns it
 * is no longer wanted), and an orchestrator's node restarted while its deployment runs.
 * Node 0 deploys; the others trust its node key as a root.
 */
const T = { timeout: 30_000 }
const CONFIG = { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, helloIntervalMs: 60_000, ports: { min: 43_000, max: 43_300 } }

/** A service; `script` runs under sh. */
const svc = (name: string, script: string, extra = ''): string => `
  ${name}:
    executor: process
    resources: { cpu: { cores: 0.05 }, ram: { size: 16MiB }, disk: { size: 1MiB } }
    restart: { policy: never }
    execution:
      cmd: [sh, -c, '${script}']${extra}`
const FOREVER = 'while true; do sleep 1; done'
/** Fails once, 2 s after its first start (the orchestrator sees it running first), then runs. */
const failOnce = (mark: string): string => `if [ -f ${mark} ]; then ${FOREVER}; else touch ${mark}; sleep 2; exit 3; fi`

describe('supervision of deployments', () => {
  let dir: string
  const ids: Identity[] = []
  const nodes: Node[] = []
  let a: Node
  let seq = 0

  const start = async (i: number): Promise<Node> => {
    const dataDir = join(dir, `n${i}`)
    // node 0 restarted (on a new port) finds the others through node 1
    const bootstrap = i === 0 ? (nodes.length > 1 ? [nodes[1].addrs()[0]] : []) : [nodes[0].addrs()[0]]
    return await createNode({ dataDir, identity: ids[i], config: { ...CONFIG, bootstrap } })
  }
  const deploy = async (yaml: string): Promise<string> =>
    (await a.invoke<{ ensembleId: string }>(a.did, '/dms/node/deployment/new', { ensemble: yaml, bidWindowMs: 300 }, T)).ensembleId
  const status = async (id: string, after?: number): Promise<DeploymentView> =>
    await a.invoke<DeploymentView>(a.did, '/dms/node/deployment/status', after === undefined ? { id } : { id, after }, { timeout: 10_000 })
  /** Follows transitions (long polls, bounded in count) until `done`. */
  const until = async (id: string, done: (v: DeploymentView) => boolean): Promise<DeploymentView> => await untilDeployment(a, id, done)
  const manifest = async (id: string): Promise<Manifest> => await a.invoke<Manifest>(a.did, '/dms/node/deployment/manifest', { id }, T)
  const heldBy = heldFor
  const shutdown = async (id: string): Promise<void> => {
    expect((await a.invoke<DeploymentView>(a.did, '/dms/node/deployment/shutdown', { id }, T)).status).toBe('Completed')
    for (const n of nodes) expect(await heldBy(n, id)).toEqual([])
  }
  const mark = (): string => join(dir, `mark-${++seq}`)

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dms-supervise-'))
    for (let i = 0; i < 4; i++) ids.push(await newIdentity())
    for (let i = 1; i < 4; i++) await addRoot(join(dir, `n${i}`), 'dms', ids[0].did)
    for (let i = 0; i < 4; i++) nodes.push(await start(i))
    a = nodes[0]
    for (const n of nodes) await n.invoke(n.did, '/dms/node/onboarding/onboard', { cpuCores: 0.5, ramBytes: 256 * 2 ** 20, diskBytes: 64 * 2 ** 20, gpus: [] }, T)
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

  it('OneForOne: places the failed allocation again and leaves the others alone', async () => {
    const id = await deploy(`version: V1
allocations:${svc('x', failOnce(mark()))}${svc('y', FOREVER)}
nodes:
  nx: { allocations: [x] }
  ny: { allocations: [y] }
`)
    expect((await until(id, v => v.status !== 'Preparing' && v.status !== 'Committing' && v.status !== 'Provisioning')).status).toBe('Running')
    const before = await manifest(id)
    const v = await until(id, s => s.status === 'Failed' || (s.status === 'Running' && s.allocations.x.restarts > 0))
    expect(v.status, v.reason).toBe('Running')
    expect(v.transitions.map(t => t.reason).join('\n')).toMatch(/x is down .*OneForOne: restarting x$/m)
    expect(v.allocations.x.restarts).toBe(1)
    expect(v.allocations.y.restarts).toBe(0)
    const after = await manifest(id)
    expect(after.allocations.y.handle).toEqual(before.allocations.y.handle)
    expect(after.allocations.x.status).toBe('running')
    await shutdown(id)
  }, 60_000)

  it('AllForOne: restarts every allocation when one fails', async () => {
    const id = await deploy(`version: V1
supervisor: { strategy: AllForOne }
allocations:${svc('x', failOnce(mark()))}${svc('y', FOREVER)}
nodes:
  nx: { allocations: [x] }
  ny: { allocations: [y] }
`)
    const v = await until(id, s => s.status === 'Failed' || (s.status === 'Running' && s.allocations.x.restarts > 0 && s.allocations.y.status === 'running'))
    expect(v.status, v.reason).toBe('Running')
    expect(v.transitions.map(t => t.reason).join('\n')).toMatch(/AllForOne: restarting x, y/)
    // y ran on: restarted in place, on its provider
    const y = (await manifest(id)).allocations.y
    const provider = nodes.find(n => n.peerId === y.peer) as Node
    const [view] = (await provider.invoke<{ allocations: AllocationView[] }>(provider.did, '/dms/node/allocations/list', { id: y.id }, T)).allocations
    expect(view.restarts).toBe(1)
    await shutdown(id)
  }, 60_000)

  it('RestForOne: restarts the failed allocation and those that depend on it, not the others', async () => {
    const id = await deploy(`version: V1
supervisor: { strategy: RestForOne }
allocations:${svc('x', failOnce(mark()))}${svc('y', FOREVER, '\n    depends_on: [x]')}${svc('z', FOREVER)}
nodes:
  nx: { allocations: [x] }
  ny: { allocations: [y] }
  nz: { allocations: [z] }
`)
    const v = await until(id, s => s.status === 'Failed' || (s.status === 'Running' && s.allocations.x.restarts > 0))
    expect(v.status, v.reason).toBe('Running')
    expect(v.transitions.map(t => t.reason).join('\n')).toMatch(/RestForOne: restarting x, y$/m)
    const m = await manifest(id)
    const restartsOf = async (name: string): Promise<number> => {
      const p = nodes.find(n => n.peerId === m.allocations[name].peer) as Node
      return (await p.invoke<{ allocations: AllocationView[] }>(p.did, '/dms/node/allocations/list', { id: m.allocations[name].id }, T)).allocations[0].restarts
    }
    expect(await restartsOf('y')).toBe(1)
    expect(await restartsOf('z')).toBe(0)
    await shutdown(id)
  }, 60_000)

  it('fails the deployment past the restart limit, and releases everything', async () => {
    const id = await deploy(`version: V1
supervisor: { strategy: OneForOne, max_restarts: 1, window: 1m }
allocations:${svc('x', 'sleep 2; exit 4')}
nodes:
  nx: { allocations: [x] }
`)
    const v = await until(id, s => s.status === 'Failed' || s.status === 'Completed')
    expect(v.status).toBe('Failed')
    expect(v.reason).toMatch(/1 restarts within 60 s is the supervisor's limit/)
    for (const n of nodes) expect(await heldBy(n, id)).toEqual([])
  }, 60_000)

  it('places again what a provider ran when it stops answering; the provider releases it when it returns', async () => {
    const id = await deploy(`version: V1
allocations:${svc('x', FOREVER)}${svc('y', FOREVER)}
nodes:
  nx: { allocations: [x] }
  ny: { allocations: [y] }
`)
    expect((await until(id, s => s.status === 'Running' || s.status === 'Failed')).status).toBe('Running')
    const before = await manifest(id)
    // a provider other than the deploying node goes away (its workload keeps running, as after a crash)
    const victimName = Object.keys(before.nodes).find(n => before.nodes[n].peer !== a.peerId) as string
    const victim = nodes.findIndex(n => n.peerId === before.nodes[victimName].peer)
    const orphan = before.nodes[victimName].allocations[0]
    await nodes[victim].stop()
    const v = await until(id, s => s.status === 'Failed' || (s.status === 'Running' && s.allocations[orphan].restarts > 0))
    expect(v.status, v.reason).toBe('Running')
    expect(v.transitions.map(t => t.reason).join('\n')).toMatch(/stopped answering/)
    const after = await manifest(id)
    expect(after.nodes[victimName].peer).not.toBe(before.nodes[victimName].peer)
    expect(after.allocations[orphan].status).toBe('running')
    // back again: it asks the orchestrator, learns it is not wanted, and releases everything
    nodes[victim] = await start(victim)
    const returned = nodes[victim]
    const left = async (): Promise<AllocationView[]> => (await returned.invoke<{ allocations: AllocationView[] }>(returned.did, '/dms/node/allocations/list', { id: before.allocations[orphan].id }, T)).allocations
    // the provider's own pace (it asks once connected): polled, bounded
    for (let i = 0; i < 100 && (await left()).length > 0; i++) await new Promise(resolve => setTimeout(resolve, 100))
    expect(await left()).toEqual([])
    expect(await heldBy(returned, id)).toEqual([])
    await shutdown(id)
  }, 90_000)

  it('an orchestrator whose node restarts goes on supervising, with the same key', async () => {
    const id = await deploy(`version: V1
allocations:${svc('x', FOREVER)}${svc('y', FOREVER)}
nodes:
  nx: { allocations: [x] }
  ny: { allocations: [y] }
`)
    const running = await until(id, s => s.status === 'Running' || s.status === 'Failed')
    expect(running.status).toBe('Running')
    await a.stop()
    nodes[0] = a = await start(0)
    const v = await status(id)
    expect(v.status).toBe('Running')
    expect(v.orchestrator?.id).toBe(running.orchestrator?.id)
    // still its owner on the providers: the shutdown reverts everywhere
    await shutdown(id)
  }, 60_000)
})
