import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createNode, type Node } from '../../src/index.js'
import { newIdentity } from '../../src/identity/identity.js'
import { addAnchor, addRoot, grantToken } from '../../src/security/index.js'
import type { AllocationView } from '../../src/services/provider/index.js'
import { heldFor, untilDeployment } from './deployment-helpers.js'
import type { DeploymentView, Manifest } from '../../src/services/orchestrator/index.js'

/**
 * Deployments across three real nodes on loopback (issue 15): bids over gossipsub and direct,
 * placement on three providers, commit and allocate, starts in dependency order, shutdown that
 * releases everything everywhere, and the explanation when nothing fits. Node A deploys; B and C
 * trust A's node key as a root (the simplest grant: a node of the same owner).
 */
const T = { timeout: 30_000 }
const service = (name: string, extra = ''): string => `
  ${name}:
    executor: process
    resources: { cpu: { cores: 0.1 }, ram: { size: 32MiB }, disk: { size: 1MiB } }
    execution:
      cmd: [sh, -c, 'echo ${name} started; while true; do sleep 1; done']${extra}`

const THREE = `version: V1
allocations:${service('db')}${service('api', '\n    depends_on: [db]')}${service('web', '\n    depends_on: [api]')}
nodes:
  n1: { allocations: [db] }
  n2: { allocations: [api] }
  n3: { allocations: [web] }
`

describe('deployments across nodes', () => {
  let dir: string
  const nodes: Node[] = []
  let a: Node

  const deploy = async (ensemble: string, extra: Record<string, unknown> = {}): Promise<string> =>
    (await a.invoke<{ ensembleId: string }>(a.did, '/dms/node/deployment/new', { ensemble, ...extra }, T)).ensembleId
  /** Follows the deployment's transitions (long polls) until `done` says so; bounded by the poll count. */
  const until = async (id: string, done: (v: DeploymentView) => boolean): Promise<DeploymentView> => await untilDeployment(a, id, done)
  const held = heldFor

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dms-deploy-'))
    const ids = await Promise.all([newIdentity(), newIdentity(), newIdentity(), newIdentity()])
    // The fourth node's owner lets A's node ask it for bids, and nothing more: it bids, and
    // refuses the commit. A holds the grant as a provide anchor.
    const ownerD = await newIdentity()
    await addRoot(join(dir, 'n3'), 'dms', ownerD.did)
    const onlyBids = await grantToken(ownerD, { subject: ids[0].did, caps: ['/dms/deployment/request'], topics: ['/nunet/deployment'], depth: 1, exp: Math.floor(Date.now() / 1000) + 3600 })
    await addAnchor(join(dir, 'n0'), 'dms', 'provide', onlyBids)
    // providers ask every 300 ms whether what they run for others is still wanted
    const config = { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, helloIntervalMs: 60_000, wantedCheckMs: 300, ports: { min: 42_000, max: 42_300 } }
    for (const [i, identity] of ids.entries()) {
      const dataDir = join(dir, `n${i}`)
      if (i > 0 && i < 3) await addRoot(dataDir, 'dms', ids[0].did)
      const bootstrap = i === 0 ? [] : [nodes[0].addrs()[0]]
      nodes.push(await createNode({ dataDir, identity, config: { ...config, bootstrap } }))
    }
    a = nodes[0]
    for (const n of nodes) await n.invoke(n.did, '/dms/node/onboarding/onboard', { cpuCores: 0.5, ramBytes: 256 * 2 ** 20, diskBytes: 64 * 2 ** 20, gpus: [] }, T)
  })
  afterAll(async () => {
    for (const n of nodes) {
      for (const x of (await n.invoke<{ allocations: AllocationView[] }>(n.did, '/dms/node/allocations/list', {}, T)).allocations) {
        if (x.status === 'running' || x.status === 'starting') await n.invoke(n.did, '/dms/node/allocation/stop', { id: x.id, graceMs: 0 }, T)
      }
    }
    for (const n of nodes.reverse()) await n.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('places three services on three providers, starts them in dependency order, and shuts them down leaving nothing', async () => {
    const id = await deploy(THREE)
    expect(id).toMatch(/^[0-9a-f]{64}$/)
    const v = await until(id, s => s.status === 'Running' || s.status === 'Failed')
    expect(v.status, v.reason).toBe('Running')
    const m = await a.invoke<Manifest>(a.did, '/dms/node/deployment/manifest', { id }, T)
    // the fourth node may be tried first: it refuses the commit, is excluded, and the rest is placed
    expect(new Set(Object.values(m.nodes).map(n => n.peer))).toEqual(new Set(nodes.slice(0, 3).map(n => n.peerId)))
    // each runs on the provider the manifest names, and started after what it depends on
    const started: Record<string, number> = {}
    for (const [name, alloc] of Object.entries(m.allocations)) {
      const provider = nodes.find(n => n.peerId === alloc.peer) as Node
      const [view] = (await provider.invoke<{ allocations: AllocationView[] }>(provider.did, '/dms/node/allocations/list', { id: alloc.id }, T)).allocations
      expect(view).toMatchObject({ status: 'running', ensembleId: id, name })
      started[name] = Date.parse(view.startedAt as string)
    }
    expect(started.db).toBeLessThanOrEqual(started.api)
    expect(started.api).toBeLessThanOrEqual(started.web)
    const logs = await a.invoke<{ data: string }>(a.did, '/dms/node/deployment/logs', { id, allocation: 'api' }, T)
    expect(logs.data).toBe('api started\n')

    const done = await a.invoke<DeploymentView>(a.did, '/dms/node/deployment/shutdown', { id }, T)
    expect(done.status).toBe('Completed')
    for (const n of nodes) expect(await held(n, id)).toEqual([])
    expect(done.transitions.map(t => t.status)).toEqual(expect.arrayContaining(['Preparing', 'Committing', 'Provisioning', 'Running', 'ShuttingDown', 'Completed']))
    // its orchestrator is gone with it (a provider asking later hears: not wanted)
    const inboxes = async (): Promise<string[]> => (await a.invoke<{ actors: Array<{ handle: { addr: { inbox: string } } }> }>(a.did, '/dms/node/actors/list', {}, T)).actors.map(x => x.handle.addr.inbox)
    for (let i = 0; i < 50 && (await inboxes()).includes(`orch/${id}`); i++) await new Promise(resolve => setTimeout(resolve, 20))
    expect(await inboxes()).not.toContain(`orch/${id}`)
    await expect(a.invoke(a.did, '/dms/node/deployment/status', { id }, T)).resolves.toMatchObject({ status: 'Completed' })
  })

  it('a provider releases, of itself, a remote ensemble its orchestrator no longer wants (a revert that never arrived)', async () => {
    const [, b] = nodes
    const ensembleId = `orphan-${Date.now()}`
    // as if an orchestrator on A had committed it and then forgotten it: its actor is gone
    const orchestrator = { id: (await newIdentity()).did, did: a.did, addr: { peer: a.peerId, inbox: 'orch/gone' } }
    await a.invoke(b.peerId, '/dms/deployment/commit', { ensembleId, orchestrator, allocations: [{ name: 'x', resources: { cpuCores: 0.05, ramBytes: 2 ** 24 }, ports: [] }] }, T)
    // B's wanted check (every 300 ms here) may find the orchestrator gone before allocate or start
    // arrives: then that step is refused because B already released the commit (NotFound) or the
    // allocation (its actor is gone: UnknownBehavior; stopping: NotRunning), which is what this
    // test is about. Any other refusal fails it.
    const steps = async (): Promise<void> => {
      const { allocations: [x] } = await a.invoke<{ allocations: Array<{ handle: AllocationView['handle'] }> }>(b.peerId, '/dms/deployment/allocate', { ensembleId, allocations: [{ name: 'x', spec: { type: 'service', command: ['sleep', '600'] } }] }, T)
      await a.invoke(x.handle as NonNullable<AllocationView['handle']>, '/dms/allocation/start', {}, T)
    }
    await steps().catch((err: unknown) => { expect(['NotFound', 'UnknownBehavior', 'NotRunning']).toContain((err as Error).name) })
    const left = async (): Promise<AllocationView[]> => (await b.invoke<{ allocations: AllocationView[] }>(b.did, '/dms/node/allocations/list', { id: `${ensembleId}.x` }, T)).allocations
    for (let i = 0; i < 100 && (await left()).length > 0; i++) await new Promise(resolve => setTimeout(resolve, 100))
    expect(await left()).toEqual([])
    expect(await held(b, ensembleId)).toEqual([])
  })

  it('a provider that refuses the commit is excluded and the deployment bids again; the reason names it', async () => {
    const d = nodes[3]
    // pinned to the provider that bids but refuses commits: it is tried, excluded, and nothing is left
    const pinned = `version: V1
allocations:${service('solo')}
nodes:
  n1: { allocations: [solo], peer: ${d.peerId} }
`
    const id = await deploy(pinned, { bidWindowMs: 300 })
    const v = await until(id, s => s.status === 'Failed' || s.status === 'Running')
    expect(v.status).toBe('Failed')
    expect(v.transitions.map(t => t.status)).toEqual(expect.arrayContaining(['Committing']))
    expect(v.transitions.filter(t => t.status === 'Preparing').map(t => t.reason)).toEqual(['created', 'collecting bids', 'collecting bids again (attempt 2)'])
    expect(v.reason).toMatch(new RegExp(`^no provider for n1: n1: peer ${d.peerId.slice(0, 12)}.*: excluded after it failed this deployment$`))
    for (const n of nodes) expect(await held(n, id)).toEqual([])
  })

  it('fails at its deadline, saying what it waited for, and releases everything', async () => {
    const never = `version: V1
allocations:${service('slow', '\n    healthcheck: { type: command, exec: [\'false\'], interval: 100ms, retries: 100 }')}
nodes:
  n1: { allocations: [slow] }
`
    const id = await deploy(never, { bidWindowMs: 300, timeoutMs: 2_000 })
    const v = await until(id, s => s.status === 'Failed' || s.status === 'Running')
    expect(v.status).toBe('Failed')
    expect(v.reason).toMatch(/deadline passed while slow was running \(health (unknown|unhealthy)\)/)
    for (const n of nodes) expect(await held(n, id)).toEqual([])
  })

  it('shuts down cleanly while it is still collecting bids', async () => {
    // a label no provider has: no bid comes, and the collection runs to the end of its window
    const nobody = THREE.replace('n1: { allocations: [db] }', 'n1: { allocations: [db], labels: { zone: nowhere } }')
    const id = await deploy(nobody, { bidWindowMs: 5_000 })
    const v = await a.invoke<DeploymentView>(a.did, '/dms/node/deployment/shutdown', { id }, T)
    expect(v.status).toBe('Completed')
    expect(v.reason).toBe('shut down on request')
    expect(v.transitions.map(t => t.status)).toEqual(['Preparing', 'Preparing', 'ShuttingDown', 'Completed'])
    for (const n of nodes) expect(await held(n, id)).toEqual([])
  })

  it('explains, per node and per provider, why nothing fits', async () => {
    const big = THREE.replace('ram: { size: 32MiB }', 'ram: { size: 64GiB }')
    const id = await deploy(big, { bidWindowMs: 300 })
    const v = await until(id, s => s.status === 'Failed' || s.status === 'Running')
    expect(v.status).toBe('Failed')
    // the db node: every provider says how much RAM it has free; the others were placeable
    expect(v.reason).toMatch(/^no provider for n1: n1: /)
    for (const n of nodes) expect(v.reason).toContain(n.peerId.slice(0, 12))
    expect(v.reason).toMatch(/ram|RAM/)
    for (const n of nodes) expect(await held(n, id)).toEqual([])
  })

  it('refuses a bad ensemble at once, naming every problem', async () => {
    const bad = THREE.replace('cores: 0.1', 'cores: many').replace('depends_on: [db]', 'depends_on: [nope]')
    await expect(deploy(bad)).rejects.toMatchObject({ name: 'BadRequest', message: expect.stringMatching(/allocations\.db\.resources\.cpu\.cores[\s\S]*allocations\.api\.depends_on/) })
  })
})
