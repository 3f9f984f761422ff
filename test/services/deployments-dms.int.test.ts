import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createNode, type Node } from '../../src/index.js'
import { newIdentity } from '../../src/identity/identity.js'
import { addRoot } from '../../src/security/index.js'
import type { AllocationView } from '../../src/services/provider/index.js'
import { heldFor, untilDeployment } from './deployment-helpers.js'
import type { DeploymentView, Manifest } from '../../src/services/orchestrator/index.js'

/**
 * DMS's own ensemble files (test/fixtures/ensembles/dms, unchanged) deployed across three nodes
 * with the docker executor on podman's Docker API, their images mapped to the ones
 * scripts/podman-setup.sh builds offline (no registry is reachable here): busybox for busybox and
 * hello-world, an nginx stand-in (answers `nginx -t`, serves port 80) for nginxdemos/hello.
 * Under CI they fail rather than skip when the engine or the images are missing.
 * multiple_allocation.yaml is not deployed here: both its nodes publish host port 8080, which two
 * providers on one machine cannot both have (it validates, test/services/orchestrator).
 */
const SETUP_SOCKET = '/var/lib/dms-podman/docker.sock'
if (process.env.DOCKER_HOST === undefined && existsSync(SETUP_SOCKET)) process.env.DOCKER_HOST = `unix://${SETUP_SOCKET}`
const BUSYBOX = process.env.DMS_TEST_DOCKER_IMAGE ?? 'localhost/dms-busybox:latest'
const NGINX = process.env.DMS_TEST_NGINX_IMAGE ?? 'localhost/dms-nginx-standin:latest'
const IMAGES = { busybox: BUSYBOX, 'hello-world': BUSYBOX, 'ubuntu:22.04': BUSYBOX, 'nginxdemos/hello:plain-text': NGINX }
const FIXTURES = join(import.meta.dirname, '../fixtures/ensembles/dms')
const T = { timeout: 30_000 }

describe('DMS ensemble files deployed with the docker executor', () => {
  let dir: string
  const nodes: Node[] = []
  let a: Node
  let why: string | undefined

  const deploy = async (file: string): Promise<string> => (await a.invoke<{ ensembleId: string }>(a.did, '/dms/node/deployment/new', {
    ensemble: await readFile(join(FIXTURES, file), 'utf8'), images: IMAGES, bidWindowMs: 300, timeoutMs: 90_000
  }, T)).ensembleId
  const until = async (id: string, done: (v: DeploymentView) => boolean): Promise<DeploymentView> => await untilDeployment(a, id, done)
  const held = heldFor

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dms-deploy-dms-'))
    const ids = await Promise.all([newIdentity(), newIdentity(), newIdentity()])
    // DMS's files name public ports 7224 and 50001–50010
    const config = { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, helloIntervalMs: 60_000, ports: { min: 7_000, max: 50_100 } }
    for (const [i, identity] of ids.entries()) {
      const dataDir = join(dir, `n${i}`)
      if (i > 0) await addRoot(dataDir, 'dms', ids[0].did)
      nodes.push(await createNode({ dataDir, identity, config: { ...config, bootstrap: i === 0 ? [] : [nodes[0].addrs()[0]] } }))
    }
    a = nodes[0]
    const docker = (await a.invoke<{ executors: Array<{ name: string, available: boolean, reason?: string }> }>(a.did, '/dms/node/status', {}, T)).executors.find(e => e.name === 'docker')
    if (docker?.available !== true) why = `no docker executor: ${docker?.reason ?? 'unknown'}; run scripts/podman-setup.sh as root and export what it prints`
    if (why !== undefined && process.env.CI !== undefined) throw new Error(`cannot run in CI: ${why}`)
    // multiple_nginx.yaml puts two 1-core, 1 GiB allocations on one of its nodes
    for (const n of nodes) await n.invoke(n.did, '/dms/node/onboarding/onboard', { cpuCores: 2, ramBytes: 2.5 * 2 ** 30, diskBytes: 2 * 2 ** 30 + 2 ** 20, gpus: [] }, T)
  }, 60_000)
  afterAll(async () => {
    for (const n of nodes) {
      for (const x of (await n.invoke<{ allocations: AllocationView[] }>(n.did, '/dms/node/allocations/list', {}, T)).allocations) {
        if (x.status === 'running' || x.status === 'starting') await n.invoke(n.did, '/dms/node/allocation/stop', { id: x.id, graceMs: 0 }, T)
      }
    }
    for (const n of [...nodes].reverse()) await n.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('two-tasks-one-service.yaml: two tasks and a health-checked service on three providers', async (ctx) => {
    if (why !== undefined) { ctx.skip(); return }
    const id = await deploy('two-tasks-one-service.yaml')
    const v = await until(id, s => s.status === 'Running' || s.status === 'Failed' || s.status === 'Completed')
    expect(v.status, v.reason).toBe('Running')
    const m = await a.invoke<Manifest>(a.did, '/dms/node/deployment/manifest', { id }, T)
    expect(new Set(Object.values(m.nodes).map(n => n.peer)).size).toBe(3)
    expect(m.allocations['service-one'].ports).toEqual([{ private: 80, public: 50010, protocol: 'tcp' }])
    // the nginx stand-in answers on the public port DMS's file gives
    const page = await (await fetch('http://127.0.0.1:50010/')).text()
    expect(page).toContain('dms-nginx-standin')
    const taskOne = await a.invoke<{ data: string }>(a.did, '/dms/node/deployment/logs', { id, allocation: 'task-one' }, T)
    expect(taskOne.data).toBe('Task one\n')
    expect((await a.invoke<DeploymentView>(a.did, '/dms/node/deployment/shutdown', { id }, T)).status).toBe('Completed')
    for (const n of nodes) expect(await held(n, id)).toEqual([])
  }, 120_000)

  it('multiple_nginx.yaml: four services from one YAML anchor, two of them on one provider, each on its public port', async (ctx) => {
    if (why !== undefined) { ctx.skip(); return }
    const id = await deploy('multiple_nginx.yaml')
    const v = await until(id, s => s.status === 'Running' || s.status === 'Failed' || s.status === 'Completed')
    expect(v.status, v.reason).toBe('Running')
    const m = await a.invoke<Manifest>(a.did, '/dms/node/deployment/manifest', { id }, T)
    expect(m.allocations['nginx-nodeB'].peer).toBe(m.allocations['nginx-B-nodeB'].peer)
    for (const port of [50001, 50002, 50003, 50004]) expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toContain('dms-nginx-standin')
    expect((await a.invoke<DeploymentView>(a.did, '/dms/node/deployment/shutdown', { id }, T)).status).toBe('Completed')
    for (const n of nodes) expect(await held(n, id)).toEqual([])
  }, 120_000)

  it('nginx-with-redundancy.yaml: two health-checked services (ubuntu run as busybox), one with a public port', async (ctx) => {
    if (why !== undefined) { ctx.skip(); return }
    const id = await deploy('nginx-with-redundancy.yaml')
    const v = await until(id, s => s.status === 'Running' || s.status === 'Failed' || s.status === 'Completed')
    expect(v.status, v.reason).toBe('Running')
    expect(await (await fetch('http://127.0.0.1:7224/')).text()).toContain('dms-nginx-standin')
    expect((await a.invoke<DeploymentView>(a.did, '/dms/node/deployment/shutdown', { id }, T)).status).toBe('Completed')
    for (const n of nodes) expect(await held(n, id)).toEqual([])
  }, 120_000)

  it('docker_hello.yaml: a task that runs and ends completes the deployment, releasing everything', async (ctx) => {
    if (why !== undefined) { ctx.skip(); return }
    const id = await deploy('docker_hello.yaml')
    const v = await until(id, s => s.status === 'Completed' || s.status === 'Failed')
    expect(v.status, v.reason).toBe('Completed')
    expect(v.reason).toBe('every task completed')
    expect(v.allocations.alloc1.status).toBe('completed')
    for (const n of nodes) expect(await held(n, id)).toEqual([])
  }, 120_000)
})
