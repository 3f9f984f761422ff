import { spawn, type ChildProcess } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BIN, PASSPHRASE, ROOT, cleanup, eventually, openStreams, startDaemon, stopAllocations, tempDir, type Daemon } from './harness.js'

/**
 * `dms alloc logs ID --follow` on a stream (issue 8): a line the workload writes reaches the CLI
 * within 100 ms, and the end of the CLI — Ctrl-C or kill -9 — ends the stream on the daemon
 * (its open-stream count, read from /metrics, returns to 0); kill -9 of the daemon ends the CLI
 * with an error instead of leaving it waiting.
 */
/** A line every 100 ms, stamped with the ms it was written (GNU date). */
const STAMPER = 'while true; do echo "t $(date +%s%3N)"; sleep 0.1; done'
/** Closing the HTTP connection is seen at once; the rest is a scrape's round trip on a loaded machine. */
const FREED_WITHIN_MS = 3_000

interface Follow { proc: ChildProcess, lines: Array<{ text: string, at: number }>, firstLine: Promise<void>, exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>, stderr: () => string }

function follow (d: Daemon, id: string, args = ['alloc', 'logs', id]): Follow {
  const proc = spawn(process.execPath, [BIN, ...args, '--follow', '--data-dir', d.dataDir], { cwd: ROOT, env: { ...process.env, DMS_PASSPHRASE: PASSPHRASE } })
  const lines: Array<{ text: string, at: number }> = []
  let buf = ''
  let err = ''
  let first!: () => void
  const firstLine = new Promise<void>(resolve => { first = resolve })
  proc.stdout!.on('data', (b: Buffer) => {
    const at = Date.now()
    buf += b.toString()
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      lines.push({ text: buf.slice(0, nl), at })
      buf = buf.slice(nl + 1)
      first()
    }
  })
  proc.stderr!.on('data', (b: Buffer) => { err += b.toString() })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => proc.on('exit', (code, signal) => { resolve({ code, signal }) }))
  return { proc, lines, firstLine, exited, stderr: () => err }
}

describe('dms alloc logs --follow on a stream', () => {
  let d: Daemon
  let id: string
  const started: ChildProcess[] = []
  beforeAll(async () => {
    d = await startDaemon()
    expect((await d.cli(['onboard', '--cpu', '1', '--ram', '1GiB', '--disk', '16MiB', '--no-gpu'])).code).toBe(0)
    id = (await d.cliJson(['alloc', 'run', '--type', 'service', '--', 'sh', '-c', STAMPER])).id
  })
  afterAll(async () => {
    for (const p of started) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL')
    if (d.proc.exitCode === null && d.proc.signalCode === null) {
      await stopAllocations(d)
    } else {
      // killed by the last test: a daemon on the same data dir stops the workload it left running
      d = await startDaemon({ dataDir: d.dataDir })
      await stopAllocations(d)
    }
    await cleanup([d])
  })

  it('shows each line within 100 ms of the workload writing it; Ctrl-C ends the stream on the daemon', async () => {
    const f = follow(d, id)
    started.push(f.proc)
    await f.firstLine
    const since = Date.now()
    await eventually(async () => f.lines.filter(l => l.at > since).length >= 12 || undefined, 15_000, 50)
    // lines written after the follow caught up (the first ones are the backlog read from offset 0)
    const latencies = f.lines.filter(l => l.at > since + 150).map(l => l.at - Number(l.text.slice(2))).slice(0, 10)
    const sorted = [...latencies].sort((x, y) => x - y)
    console.log(`alloc logs --follow latency (ms): ${latencies.join(' ')}; median ${sorted[Math.floor(sorted.length / 2)]}, max ${sorted[sorted.length - 1]}`)
    expect(latencies.length).toBe(10)
    expect(sorted[Math.floor(sorted.length / 2)]).toBeLessThan(100)
    // 8 of 10 within the bound: one line can land on a scheduling hiccup of this shared machine
    expect(latencies.filter(ms => ms < 100).length).toBeGreaterThanOrEqual(8)
    expect(await openStreams(d)).toBe(2) // this daemon holds both ends: the CLI's reader and the allocation's writer
    const at = Date.now()
    f.proc.kill('SIGINT')
    await f.exited
    await eventually(async () => (await openStreams(d)) === 0 || undefined, FREED_WITHIN_MS, 20)
    console.log(`streams freed ${Date.now() - at} ms after SIGINT`)
  })

  it('kill -9 of the CLI ends the stream on the daemon within the bound', async () => {
    const f = follow(d, id)
    started.push(f.proc)
    await f.firstLine
    expect(await openStreams(d)).toBe(2)
    const at = Date.now()
    f.proc.kill('SIGKILL')
    await f.exited
    await eventually(async () => (await openStreams(d)) === 0 || undefined, FREED_WITHIN_MS, 20)
    console.log(`streams freed ${Date.now() - at} ms after kill -9 of the CLI`)
  })

  it('kill -9 of the daemon ends the CLI with StreamLost instead of leaving it waiting', async () => {
    const f = follow(d, id)
    started.push(f.proc)
    await f.firstLine
    const at = Date.now()
    await d.kill9()
    const { code } = await f.exited
    const took = Date.now() - at
    console.log(`CLI ended ${took} ms after kill -9 of the daemon: ${f.stderr().trim()}`)
    expect(code).toBe(1)
    expect(f.stderr()).toMatch(/^StreamLost: /)
    expect(took).toBeLessThan(FREED_WITHIN_MS)
  })
})

/**
 * A daemon's default heartbeat (2 s) × misses (3) after the last answer, plus the beat in flight
 * (2 s): the bound of specs/streams.md for daemons, and 2 s of slack for a loaded machine.
 */
const DAEMON_LIVENESS_BOUND_MS = 2_000 * 3 + 2_000 + 2_000

/** The stamper on the provider, pinned there, deployed from the orchestrator's node. */
const stamped = (peer: string): string => `version: V1
allocations:
  s:
    executor: process
    resources: { cpu: { cores: 0.1 }, ram: { size: 32MiB }, disk: { size: 1MiB } }
    execution: { cmd: [sh, -c, '${STAMPER}'] }
nodes:
  node-p:
    allocations: [s]
    peer: ${peer}
`

describe('dms deployment logs --follow across two daemons', () => {
  let a: Daemon
  let p: Daemon
  let dir: string
  let ensembleId: string
  const started: ChildProcess[] = []
  beforeAll(async () => {
    dir = await tempDir('dms-stream-files-')
    a = await startDaemon()
    p = await startDaemon({ args: ['--bootstrap', a.info.addrs[0]] })
    // the provider's user lets A's node deploy there; A presents the token (as in deploy.test.ts)
    const grant = await p.cli(['cap', 'grant', a.info.did, '--cap', '/dms/deployment', '--topic', '/nunet/deployment', '--depth', '1', '--duration', '1h', '--token-only'])
    expect(grant.code, grant.stderr).toBe(0)
    expect((await a.cli(['cap', 'anchor', '--context', 'dms', '--provide', grant.stdout.trimEnd().split('\n').pop() as string])).code).toBe(0)
    for (const n of [a, p]) expect((await n.cli(['onboard', '--cpu', '0.5', '--ram', '256MiB', '--disk', '64MiB', '--no-gpu'])).code).toBe(0)
    const file = join(dir, 'stamped.yaml')
    await writeFile(file, stamped(p.info.peerId))
    const r = await a.cli(['deploy', file, '--timeout', '60s'], { timeoutMs: 90_000 })
    expect(r.code, r.stderr).toBe(0)
    ensembleId = (JSON.parse(r.stdout.trimEnd().split('\n').pop() as string) as { ensembleId: string }).ensembleId
  })
  afterAll(async () => {
    for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
    // the provider was killed: a daemon on its data dir stops the workload it left running
    if (p.proc.exitCode !== null || p.proc.signalCode !== null) p = await startDaemon({ dataDir: p.dataDir, args: ['--bootstrap', a.info.addrs[0]] })
    for (const n of [a, p]) await stopAllocations(n)
    await cleanup([p, a], [dir])
  })

  it('relays each line within 100 ms; kill -9 of the provider ends the CLI with StreamLost within the heartbeat bound', async () => {
    const f = follow(a, ensembleId, ['deployment', 'logs', ensembleId, 'node-p.s'])
    started.push(f.proc)
    await f.firstLine
    const since = Date.now()
    await eventually(async () => f.lines.filter(l => l.at > since).length >= 12 || undefined, 15_000, 50)
    const latencies = f.lines.filter(l => l.at > since + 150).map(l => l.at - Number(l.text.slice(2))).slice(0, 10)
    const sorted = [...latencies].sort((x, y) => x - y)
    console.log(`deployment logs --follow latency across two daemons (ms): ${latencies.join(' ')}; median ${sorted[Math.floor(sorted.length / 2)]}, max ${sorted[sorted.length - 1]}`)
    expect(sorted[Math.floor(sorted.length / 2)]).toBeLessThan(100)
    // A: the CLI's reader, the relay's writer, the orchestrator's reader; the provider: the allocation's writer
    expect([await openStreams(a), await openStreams(p)]).toEqual([3, 1])
    const at = Date.now()
    await p.kill9()
    const { code } = await f.exited
    const took = Date.now() - at
    console.log(`CLI ended ${took} ms after kill -9 of the provider: ${f.stderr().trim()}`)
    expect(code).toBe(1)
    expect(f.stderr()).toMatch(/^StreamLost: /)
    expect(took).toBeLessThan(DAEMON_LIVENESS_BOUND_MS)
    expect(await openStreams(a)).toBe(0)
  })
})
