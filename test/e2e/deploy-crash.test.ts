import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { DeploymentView, Manifest } from '../../src/services/orchestrator/index.js'
import type { AllocationView } from '../../src/services/provider/index.js'
import { cleanup, eventually, startDaemon, stopAllocations, tempDir, type Daemon } from './harness.js'

/**
 * Deployments across daemons that die with `kill -9` (issue 15): the orchestrator's node killed
 * while the deployment waits for a health check and again while it runs, and a provider killed
 * while it runs. Nothing may be lost, duplicated or leaked: the restarted orchestrator continues
 * from its persisted status with the same key, and a restarted provider asks the orchestrator
 * whether it is still wanted and releases everything if not.
 */
const ALIVE = '/proc'

/** Running, not a zombie waiting for its new parent (PID 1 of this machine) to reap it. */
const alive = async (pid: number): Promise<boolean> => {
  const stat = await readFile(`${ALIVE}/${pid}/stat`, 'utf8').catch(() => '')
  return stat !== '' && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
}

describe('deployments when daemons are killed', () => {
  const ds: Daemon[] = []
  let dir: string
  let nodeDid: string

  const cmd = async <T>(d: Daemon, path: string, data: unknown = {}): Promise<T> =>
    await d.cliJson<T>(['actor', 'cmd', path, '--data', JSON.stringify(data)])
  const status = async (id: string): Promise<DeploymentView> => await cmd<DeploymentView>(ds[0], '/dms/node/deployment/status', { id })
  const held = async (d: Daemon, id: string): Promise<string[]> => {
    const l = await cmd<{ reservations: Array<{ id: string }>, allocations: Array<{ id: string }> }>(d, '/dms/node/resources/ledger')
    return [...l.reservations, ...l.allocations].map(r => r.id).filter(x => x.startsWith(`${id}.`))
  }
  const allocationsOf = async (d: Daemon, id: string): Promise<AllocationView[]> =>
    (await cmd<{ allocations: AllocationView[] }>(d, '/dms/node/allocations/list')).allocations.filter(a => a.ensembleId === id)
  /** The daemon again, on the same data dir, finding the others through `via`. */
  const restart = async (i: number, via: Daemon): Promise<Daemon> => {
    ds[i] = await startDaemon({ dataDir: ds[i].dataDir, args: ['--bootstrap', via.info.addrs[0]] })
    return ds[i]
  }
  const deploy = async (yaml: string): Promise<string> =>
    (await cmd<{ ensembleId: string }>(ds[0], '/dms/node/deployment/new', { ensemble: yaml, bidWindowMs: 300, timeoutMs: 120_000 })).ensembleId

  beforeAll(async () => {
    dir = await tempDir('dms-deploy-crash-')
    ds.push(await startDaemon())
    ds.push(await startDaemon({ args: ['--bootstrap', ds[0].info.addrs[0]] }))
    ds.push(await startDaemon({ args: ['--bootstrap', ds[0].info.addrs[0]] }))
    nodeDid = ds[0].info.did
    // B and C belong to A's owner: they trust A's node (its orchestrators act with its delegation)
    for (const d of ds.slice(1)) expect((await d.cli(['cap', 'anchor', '--context', 'dms', '--root', nodeDid])).code).toBe(0)
    for (const d of ds) expect((await d.cli(['onboard', '--cpu', '0.5', '--ram', '256MiB', '--disk', '64MiB', '--no-gpu'])).code).toBe(0)
  }, 120_000)
  afterAll(async () => {
    for (const d of ds) await stopAllocations(d)
    await cleanup(ds, [dir])
  })

  it('the orchestrator killed while it waits for a health check, and again while running, continues with nothing lost or doubled', async () => {
    const mark = join(dir, 'healthy')
    const id = await deploy(`version: V1
allocations:
  x:
    executor: process
    resources: { cpu: { cores: 0.05 }, ram: { size: 16MiB }, disk: { size: 1MiB } }
    execution: { cmd: [sh, -c, 'while true; do sleep 1; done'] }
    healthcheck: { type: command, exec: [test, -f, '${mark}'], interval: 100ms, retries: 1 }
  y:
    executor: process
    resources: { cpu: { cores: 0.05 }, ram: { size: 16MiB }, disk: { size: 1MiB } }
    execution: { cmd: [sh, -c, 'while true; do sleep 1; done'] }
    depends_on: [x]
nodes:
  nx: { allocations: [x] }
  ny: { allocations: [y] }
`)
    // x runs but is not healthy: y waits, and so does the deployment
    await eventually(async () => { const v = await status(id); return v.status === 'Provisioning' && /starting x/.test(v.reason) })
    await ds[0].kill9()
    await restart(0, ds[1])
    await writeFile(mark, '')
    const running = await eventually(async () => { const v = await status(id); return v.status === 'Running' || v.status === 'Failed' ? v : undefined }, 60_000)
    expect(running.status, running.reason).toBe('Running')
    // exactly one allocation per ensemble allocation across the three daemons, each running
    const all = (await Promise.all(ds.map(async d => await allocationsOf(d, id)))).flat()
    expect(all.map(a => a.name).sort()).toEqual(['x', 'y'])
    expect(all.every(a => a.status === 'running')).toBe(true)

    await ds[0].kill9()
    await restart(0, ds[1])
    const again = await status(id)
    expect(again.status).toBe('Running')
    expect(again.orchestrator?.id).toBe(running.orchestrator?.id)
    expect((await cmd<DeploymentView>(ds[0], '/dms/node/deployment/shutdown', { id })).status).toBe('Completed')
    for (const d of ds) expect(await held(d, id)).toEqual([])
    for (const a of all) expect(await alive(Number(a.workload))).toBe(false)
  }, 180_000)

  it('a provider killed while running: its part is placed elsewhere, and on restart it releases what it held', async () => {
    // A runs nothing of this one: the provider killed is never the orchestrator's node
    await cmd(ds[0], '/dms/node/state/set', { state: 'standby' })
    const id = await deploy(`version: V1
allocations:
  x:
    executor: process
    resources: { cpu: { cores: 0.05 }, ram: { size: 16MiB }, disk: { size: 1MiB } }
    execution: { cmd: [sh, -c, 'while true; do sleep 1; done'] }
nodes:
  nx: { allocations: [x] }
`)
    const running = await eventually(async () => { const v = await status(id); return v.status === 'Running' || v.status === 'Failed' ? v : undefined }, 60_000)
    expect(running.status, running.reason).toBe('Running')
    await cmd(ds[0], '/dms/node/state/set', { state: 'ready' })
    const m = await cmd<Manifest>(ds[0], '/dms/node/deployment/manifest', { id })
    const victim = ds.findIndex(d => d.info.peerId === m.allocations.x.peer)
    expect(victim).toBeGreaterThan(0)
    const [before] = await allocationsOf(ds[victim], id)
    const pid = Number(before.workload)
    await ds[victim].kill9()
    expect(await alive(pid)).toBe(true) // a workload outlives its daemon
    const moved = await eventually(async () => { const v = await status(id); return v.status === 'Running' && v.allocations.x.restarts > 0 ? v : undefined }, 60_000)
    expect(moved.allocations.x.peer).not.toBe(ds[victim].info.peerId)
    expect(moved.transitions.map(t => t.reason).join('\n')).toMatch(/stopped answering/)
    const back = await restart(victim, ds[0])
    await eventually(async () => (await allocationsOf(back, id)).length === 0, 60_000)
    expect(await held(back, id)).toEqual([])
    expect(await alive(pid)).toBe(false)
    expect((await cmd<DeploymentView>(ds[0], '/dms/node/deployment/shutdown', { id })).status).toBe('Completed')
    for (const d of ds) expect(await held(d, id)).toEqual([])
  }, 180_000)
})
