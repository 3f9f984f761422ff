import { spawn } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { LedgerSnapshot } from '../../src/services/resources/index.js'
import type { DeploymentView, Manifest } from '../../src/services/orchestrator/index.js'
import { BIN, PASSPHRASE, ROOT, cleanup, dms, eventually, openStreams, startDaemon, stopAllocations, tempDir, type CliResult, type Daemon } from './harness.js'

/**
 * `dms deploy` and `dms deployment …` through the CLI against three daemons in separate processes
 * (issue 15): A deploys, B and C bootstrap to A. Every data dir has its own user, and trust is set
 * up as an operator would: on B and on C the user grants A's node /dms/deployment (and the
 * /nunet/deployment topic its bid requests travel on), and A anchors each token in its dms
 * context. The README's "Deploy an ensemble across nodes" is this session with fixed ports.
 */
const THREE = 'test/fixtures/ensembles/three-services.yaml'
const ONBOARD = ['onboard', '--cpu', '0.5', '--ram', '256MiB', '--disk', '64MiB', '--no-gpu']

interface Summary { ensembleId: string, status: string, reason: string, allocations: Record<string, { peer: string, id: string, status: string }> }

/** `dms deploy` prints progress on stderr and one JSON document as the last line of stdout. */
function lastJson<T> (r: CliResult): T {
  const lines = r.stdout.trimEnd().split('\n')
  return JSON.parse(lines[lines.length - 1]) as T
}

/** The token `cap grant` prints alone on its last line. */
function token (r: CliResult): string {
  if (r.code !== 0) throw new Error(`cap grant exited ${r.code}: ${r.stderr}`)
  return r.stdout.trimEnd().split('\n').pop() as string
}

/** Reservations and allocations a daemon's ledger holds for the ensemble. */
async function held (d: Daemon, ensembleId: string): Promise<string[]> {
  const l = await d.cliJson<LedgerSnapshot>(['actor', 'cmd', '/dms/node/resources/ledger'])
  return [...l.reservations, ...l.allocations].map(x => x.id).filter(id => id.startsWith(ensembleId))
}

/** One allocation that asks `ram`, optionally pinned to a peer. */
const single = (ram: string, peer?: string): string => `version: V1
allocations:
  big:
    executor: process
    resources: { cpu: { cores: 0.1 }, ram: { size: ${ram} }, disk: { size: 1MiB } }
    execution: { cmd: [sleep, '600'] }
nodes:
  node-big:
    allocations: [big]${peer !== undefined ? `\n    peer: ${peer}` : ''}
`

describe('dms deploy across three daemons', () => {
  let a: Daemon, b: Daemon, c: Daemon
  let d: Daemon | undefined
  let dir: string

  beforeAll(async () => {
    dir = await tempDir('dms-deploy-files-')
    a = await startDaemon()
    ;[b, c] = await Promise.all([
      startDaemon({ args: ['--bootstrap', a.info.addrs[0]] }),
      startDaemon({ args: ['--bootstrap', a.info.addrs[0]] })
    ])
    const NA = (await a.cli(['key', 'did', '--context', 'dms'])).stdout.trim()
    expect(NA).toBe(a.info.did)
    // A provider's owner allows A's node to deploy there; A presents the token when it does. Two
    // grants of two owners: A's orchestrator attaches a chain through each (a bid request is one
    // broadcast, and each provider admits only the chain through its own owner's grant).
    for (const provider of [b, c]) {
      const t = token(await provider.cli(['cap', 'grant', NA, '--cap', '/dms/deployment', '--topic', '/nunet/deployment', '--depth', '1', '--duration', '1h', '--token-only']))
      const anchors = await a.cliJson<{ provide: unknown[] }>(['cap', 'anchor', '--context', 'dms', '--provide', t])
      expect(anchors.provide.length).toBeGreaterThan(0)
    }
    for (const n of [a, b, c]) expect((await n.cli(ONBOARD)).code).toBe(0)
  })
  afterAll(async () => {
    for (const n of [a, b, c, d]) await stopAllocations(n)
    await cleanup([d, c, b, a], [dir])
  })

  it('deploys three services on three providers, shows where they run and their logs, and shuts them down leaving nothing', async () => {
    const r = await a.cli(['deploy', THREE, '--timeout', '60s'], { timeoutMs: 90_000 })
    expect(r.code, r.stderr).toBe(0)
    const out = lastJson<Summary>(r)
    expect(out).toMatchObject({ ensembleId: expect.stringMatching(/^[0-9a-f]{64}$/), status: 'Running' })
    const id = out.ensembleId
    expect(Object.keys(out.allocations).sort()).toEqual(['node-a.a', 'node-b.b', 'node-c.c'])
    const peers = Object.values(out.allocations).map(x => x.peer)
    expect(new Set(peers)).toEqual(new Set([a.info.peerId, b.info.peerId, c.info.peerId]))
    for (const [key, x] of Object.entries(out.allocations)) expect(x).toMatchObject({ id: `${id}.${key.split('.')[1]}`, status: 'running' })
    // progress, one line per transition, in order
    expect(r.stderr).toMatch(/Preparing: collecting bids\n[\s\S]*Committing: [\s\S]*Provisioning: starting a \(layer 1 of 3\)\n[\s\S]*Provisioning: starting c \(layer 3 of 3\)\nRunning: every allocation started\n/)

    const manifest = await a.cliJson<Manifest>(['deployment', 'manifest', id])
    expect(manifest).toMatchObject({ ensembleId: id, status: 'Running' })
    expect(Object.fromEntries(Object.entries(manifest.nodes).map(([n, x]) => [n, x.peer]))).toEqual(
      Object.fromEntries(Object.entries(out.allocations).map(([k, x]) => [k.split('.')[0], x.peer])))
    expect(await a.cliJson<DeploymentView>(['deployment', 'status', id])).toMatchObject({ ensembleId: id, status: 'Running', transitionCount: expect.any(Number) })
    const { deployments } = await a.cliJson<{ deployments: DeploymentView[] }>(['deployment', 'list'])
    expect(deployments.map(x => [x.ensembleId, x.status])).toContainEqual([id, 'Running'])

    // b runs on a provider of its own; its output comes back through A's orchestrator
    const logs = await eventually(async () => {
      const l = await a.cli(['deployment', 'logs', id, 'b'])
      return l.code === 0 && l.stdout.includes('tick') ? l.stdout : undefined
    })
    expect(logs).toMatch(/^(tick\n)+$/)
    expect((await a.cli(['deployment', 'logs', id, 'node-b.x'])).stderr).toMatch(/^InvalidArgument: .*no allocation 'node-b.x'.*node-b\.b/)
    // --follow shows output as it comes and ends when the allocation does (at shutdown)
    const follow = spawn(process.execPath, [BIN, 'deployment', 'logs', id, 'node-c.c', '--follow', '--data-dir', a.dataDir], { cwd: ROOT, env: { ...process.env, DMS_PASSPHRASE: PASSPHRASE } })
    let followed = ''
    let followErr = ''
    follow.stderr.on('data', (x: Buffer) => { followErr += x.toString() })
    const ticked = new Promise<void>(resolve => { follow.stdout.on('data', (x: Buffer) => { followed += x.toString(); if (followed.includes('tick\n')) resolve() }) })
    const followExit = new Promise<number | null>(resolve => follow.on('exit', code => { resolve(code) }))
    const killer = setTimeout(() => follow.kill('SIGKILL'), 60_000)
    await Promise.race([ticked, followExit])
    expect(followed, followErr).toContain('tick\n')
    // on streams: A holds the CLI's reader, its writer and the orchestrator's reader; c's provider the allocation's writer
    const byPeer = new Map([a, b, c].map(n => [n.info.peerId, n]))
    const cHost = byPeer.get(out.allocations['node-c.c'].peer) as Daemon
    const bHost = byPeer.get(out.allocations['node-b.b'].peer) as Daemon
    const counts = async (): Promise<number[]> => await Promise.all([a, b, c].map(openStreams))
    /** Per daemon: 3 on A and 1 on the allocation's provider for each follow. */
    const expected = (follows: Daemon[]): number[] => [a, b, c].map(n => follows.reduce((sum, host) => sum + (n === a ? 3 : 0) + (n === host ? 1 : 0), 0))
    expect(await counts()).toEqual(expected([cHost]))

    // Ctrl-C of a second follow (of b) ends its stream on b, the node that serves it
    const second = spawn(process.execPath, [BIN, 'deployment', 'logs', id, 'node-b.b', '--follow', '--data-dir', a.dataDir], { cwd: ROOT, env: { ...process.env, DMS_PASSPHRASE: PASSPHRASE } })
    const secondExit = new Promise<void>(resolve => second.on('exit', () => { resolve() }))
    await new Promise<void>(resolve => { second.stdout.on('data', (x: Buffer) => { if (x.toString().includes('tick')) resolve() }) })
    expect(await counts()).toEqual(expected([cHost, bHost]))
    const interrupted = Date.now()
    second.kill('SIGINT')
    await secondExit
    await eventually(async () => JSON.stringify(await counts()) === JSON.stringify(expected([cHost])) || undefined, 5_000, 20)
    console.log(`${bHost === a ? 'a' : 'b\'s provider'} freed the stream ${Date.now() - interrupted} ms after SIGINT of the CLI on a`)

    const done = await a.cliJson<DeploymentView>(['deployment', 'shutdown', id])
    expect(done).toMatchObject({ ensembleId: id, status: 'Completed' })
    expect(await followExit, followErr).toBe(0)
    clearTimeout(killer)
    await eventually(async () => (await counts()).every(n => n === 0) || undefined, 5_000, 20)
    for (const n of [a, b, c]) expect(await held(n, id)).toEqual([])
  })

  it('fails at once when nothing fits, naming the node and why, per provider', async () => {
    const file = join(dir, 'too-big.yaml')
    await writeFile(file, single('64GiB'))
    // the daemon's own deadline is 30 s; it must fail long before (killed at 20 s: exit 128)
    const r = await a.cli(['deploy', file, '--timeout', '30s', '--bid-window', '300ms'], { timeoutMs: 20_000 })
    expect(r.code, r.stderr).toBe(1)
    const failed = r.stderr.split('\n').find(l => l.startsWith('Failed: ')) as string
    // said once: the last transition is the reason
    expect(r.stderr.split('\n').filter(l => l.startsWith('Failed: '))).toHaveLength(1)
    expect(failed).toMatch(/node-big/)
    expect(failed).toMatch(/ram/i)
    for (const n of [a, b, c]) expect(failed).toContain(n.info.peerId.slice(0, 12))
    const out = lastJson<Summary>(r)
    expect(out).toMatchObject({ status: 'Failed', reason: failed.slice('Failed: '.length) })
    for (const n of [a, b, c]) expect(await held(n, out.ensembleId)).toEqual([])
  })

  it('--follow keeps printing transitions after Running until the deployment ends', async () => {
    const file = join(dir, 'task.yaml')
    // a task that ends by itself a moment after it started: Running, then Completed
    await writeFile(file, single('32MiB').replace("execution: { cmd: [sleep, '600'] }", "execution: { cmd: [sh, -c, 'sleep 1; echo done'] }\n    type: task"))
    const r = await a.cli(['deploy', file, '--timeout', '30s', '--bid-window', '300ms', '--follow'], { timeoutMs: 45_000 })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toMatch(/Running: every allocation started\n[\s\S]*Completed: every task completed\n/)
    // a document once Running, then the last one once it ended
    const docs = r.stdout.trimEnd().split('\n').map(l => JSON.parse(l) as Summary)
    expect(docs.map(x => x.status)).toEqual(['Running', 'Completed'])
    for (const n of [a, b, c]) expect(await held(n, docs[1].ensembleId)).toEqual([])
  })

  it('keeps a completed task\'s output readable until the deployment is shut down', async () => {
    const file = join(dir, 'task-output.yaml')
    await writeFile(file, single('32MiB').replace("execution: { cmd: [sleep, '600'] }", "execution: { cmd: [sh, -c, 'echo done'] }\n    type: task"))
    const r = await a.cli(['deploy', file, '--timeout', '30s', '--bid-window', '300ms', '--follow'], { timeoutMs: 45_000 })
    expect(r.code, r.stderr).toBe(0)
    const { ensembleId, status } = lastJson<Summary>(r)
    expect(status).toBe('Completed')
    // its resources were given back when it ended; its record and output stay a while
    for (const n of [a, b, c]) expect(await held(n, ensembleId)).toEqual([])
    expect((await a.cli(['deployment', 'logs', ensembleId, 'node-big.big'])).stdout).toBe('done\n')
    expect((await a.cliJson(['deployment', 'shutdown', ensembleId])).status).toBe('Completed')
    const gone = await a.cli(['deployment', 'logs', ensembleId, 'big'])
    expect(gone.code).toBe(1)
    expect(gone.stderr).toMatch(/^InvalidState: deployment .* is Completed and its allocations were released/)
  })

  it('shows a spinner beside the current step on a terminal, and plain lines otherwise', async () => {
    const file = join(dir, 'spin.yaml')
    await writeFile(file, single('32MiB'))
    // a pseudo-terminal from util-linux `script`; its output is stdout and stderr together
    const quote = (x: string): string => `'${x.replace(/'/g, "'\\''")}'`
    const args = [process.execPath, BIN, 'deploy', file, '--timeout', '30s', '--bid-window', '300ms', '--data-dir', a.dataDir]
    const child = spawn('script', ['-qec', args.map(quote).join(' '), '/dev/null'], { cwd: ROOT, env: { ...process.env, DMS_PASSPHRASE: PASSPHRASE, TERM: 'dumb' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (b: Buffer) => { out += b.toString() })
    const killer = setTimeout(() => child.kill('SIGKILL'), 45_000)
    expect(await new Promise<number | null>(resolve => child.on('exit', c => { resolve(c) }))).toBe(0)
    clearTimeout(killer)
    expect(out).toMatch(/\r\x1b\[2K[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] Preparing: collecting bids/)
    expect(out).toMatch(/\r\x1b\[2KRunning: every allocation started\r?\n/)
    const summaryLine = out.split(/\r?\n/).filter(l => l.startsWith('{')).pop() as string
    const { ensembleId } = JSON.parse(summaryLine) as Summary
    expect((await a.cliJson(['deployment', 'shutdown', ensembleId])).status).toBe('Completed')
    // piped: the same steps as plain lines, no escape sequence at all
    const piped = await a.cli(['deploy', file, '--timeout', '30s', '--bid-window', '300ms'])
    expect(piped.code).toBe(0)
    expect(piped.stderr).not.toContain('\x1b')
    expect(piped.stderr).toMatch(/^deployment [0-9a-f]{64}\nPreparing: created\nPreparing: collecting bids\n/)
    expect((await a.cliJson(['deployment', 'shutdown', lastJson<Summary>(piped).ensembleId])).status).toBe('Completed')
  })

  it('--image runs a local image where the file names one no registry here has', async () => {
    const file = join(dir, 'docker-task.yaml')
    await writeFile(file, `version: V1
allocations:
  hi:
    type: task
    executor: docker
    resources: { cpu: { cores: 0.1 }, ram: { size: 32MiB }, disk: { size: 1MiB } }
    execution: { image: 'example.org/hello:1', cmd: [echo, hi] }
nodes:
  n: { allocations: [hi] }
`)
    const bad = await a.cli(['deploy', file, '--image', 'example.org/hello:1'])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/^InvalidArgument: --image takes NAME=IMAGE/)
    const image = process.env.DMS_TEST_DOCKER_IMAGE ?? 'localhost/dms-busybox:latest'
    const r = await a.cli(['deploy', file, '--image', `example.org/hello:1=${image}`, '--timeout', '60s', '--bid-window', '300ms', '--follow'], { timeoutMs: 90_000 })
    expect(r.code, r.stderr).toBe(0)
    const { ensembleId, status } = lastJson<Summary>(r)
    expect(status).toBe('Completed')
    expect((await a.cli(['deployment', 'logs', ensembleId, 'hi'])).stdout).toBe('hi\n')
    expect((await a.cliJson(['deployment', 'shutdown', ensembleId])).status).toBe('Completed')
  })

  it('--dry-run checks a file without a daemon: every mistake named, or the plan', async () => {
    const file = join(dir, 'two-mistakes.yaml')
    await writeFile(file, single('32MiB').replace('cores: 0.1', 'cores: many').replace('executor: process', 'executor: kubernetes'))
    // a data dir with no daemon (nor keys): none is needed
    const nowhere = { env: { DMS_HOME: join(dir, 'nowhere') } }
    const bad = await dms(['deploy', file, '--dry-run'], nowhere)
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/^BadRequest: .*2 problems/)
    expect(bad.stderr).toContain('allocations.big.resources.cpu.cores')
    expect(bad.stderr).toContain('allocations.big.executor')
    const good = await dms(['deploy', THREE, '--dry-run'], nowhere)
    expect(good.code, good.stderr).toBe(0)
    expect(JSON.parse(good.stdout)).toMatchObject({ valid: true, layers: [['a'], ['b'], ['c']], nodes: [{ name: 'node-a' }, { name: 'node-b' }, { name: 'node-c' }] })
    // durations need a unit
    const bare = await a.cli(['deploy', THREE, '--timeout', '60'])
    expect(bare.code).toBe(1)
    expect(bare.stderr).toMatch(/^InvalidArgument: --timeout 60 needs a unit/)
  })

  it('a provider that granted nothing refuses, and the failure says Unauthorized', async () => {
    // D trusts only its own user: A's node holds no token for it
    d = await startDaemon({ args: ['--bootstrap', a.info.addrs[0]] })
    expect((await d.cli(ONBOARD)).code).toBe(0)
    const file = join(dir, 'on-d.yaml')
    await writeFile(file, single('32MiB', d.info.peerId))
    const r = await a.cli(['deploy', file, '--timeout', '30s', '--bid-window', '300ms'], { timeoutMs: 45_000 })
    expect(r.code, r.stderr).toBe(1)
    const failed = r.stderr.split('\n').find(l => l.startsWith('Failed: ')) as string
    expect(failed).toContain(d.info.peerId.slice(0, 12))
    expect(failed).toContain('Unauthorized')
    expect(await held(d, lastJson<Summary>(r).ensembleId)).toEqual([])
  })
})
