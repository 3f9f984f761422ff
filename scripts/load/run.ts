import '../../src/lib/polyfill.js'
import { spawn, type ChildProcess } from 'node:child_process'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { PASSPHRASE, ROOT, dmsJson, startDaemon, tempDir, type Daemon } from '../../test/e2e/harness.js'
import setupBuild from '../../test/e2e/global-setup.js'
import type { ClientConfig, Command, LoadReport } from './client.js'

/**
 * `npm run load [-- --clients N] [-- --inflight N] [-- --seconds N] [-- --quick] [-- --json] [-- --timing]`
 *
 * One `dms run` daemon (default configuration, from dist/ as installed) and, each in its own
 * process: N flood clients (dms nodes keeping `--inflight` invokes of `/public/hello` in flight),
 * one probe (a well-behaved dms node: one call at a time), one client writing garbage on the
 * actor protocol and one invoking with a fresh key per call. First every flood client and the
 * probe measure their unloaded latency alone, one after the other; then all run together for
 * `--seconds`. Prints, per client: calls ok / Overloaded / other errors / timeouts, p50 and p99
 * loaded against unloaded and their ratio; the daemon's RSS (peak VmHWM and sampled VmRSS),
 * whether it survived and still answers, and what it logged at warn or above.
 *
 * `--timing` runs the daemon with DMS_STAGE_TIMING=1 and prints its 'stage timing' log lines: for the
 * loaded phase, where the probe's frames and the flood's waited inside the daemon (read → delivered,
 * delivered → handled and answered) and how long its event-loop turns and delivery rounds were.
 * No daemon of this version logs them (the timing went with the reverted node-wide delivery
 * budget, specs/protocol.md), so today it prints an empty section: kept for the next investigation.
 *
 * The verdict (exit code 1 when it fails) holds only what cannot be a timing flake: the daemon
 * stayed up and answers, no client process died, every call ended with a reply or a typed error
 * (no timeout, nothing untyped), and the garbage did not cost a well-behaved client a call.
 * The p99 ratio (target ≤ 10) is reported beside it, not judged: it measures the machine too.
 */
const { values: flags } = parseArgs({
  options: {
    clients: { type: 'string' },
    inflight: { type: 'string' },
    seconds: { type: 'string' },
    quick: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    timing: { type: 'boolean', default: false }
  }
})
const quick = flags.quick === true
const json = flags.json === true
const timing = flags.timing === true
function intFlag (v: string | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt
  const n = Number(v)
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got '${v}'`)
  return n
}
const CLIENTS = intFlag(flags.clients, quick ? 3 : 10, 'clients')
const INFLIGHT = intFlag(flags.inflight, quick ? 200 : 1_000, 'inflight')
const SECONDS = intFlag(flags.seconds, quick ? 3 : 30, 'seconds')
/** Sequential calls each client makes alone to measure its unloaded latency. */
const UNLOADED_CALLS = quick ? 200 : 1_000
/** A call with no answer by then is a timeout: far beyond any queueing the load can cause. */
const CALL_TIMEOUT_MS = 20_000
/** Daemon memory is sampled this often during the loaded phase. */
const RSS_SAMPLE_MS = 250
/** One client's unloaded calls may take this long in all (the shared machine can be very slow). */
const UNLOADED_TIMEOUT_MS = 300_000
/** A client's answer to a command may take the phase's length plus this. */
const REPLY_SLACK_MS = 60_000
/** Clients started at once, and how long one may take to load and reach the daemon. */
const START_BATCH = 2
const READY_TIMEOUT_MS = 300_000
/** The rotating-key client keeps fewer calls in flight: each costs a key generation here. */
const ROTATING_INFLIGHT = Math.min(INFLIGHT, 100)

function log (s: string): void { (json ? process.stderr : process.stdout).write(s + '\n') }

interface Client {
  name: string
  role: ClientConfig['role']
  proc: ChildProcess
  /** Resolves with the next JSON line of type `type` (bounded by `ms`). */
  next: (type: string, ms: number) => Promise<{ report?: LoadReport, peerId?: string }>
  send: (c: Command) => void
  exited: Promise<number>
  crashed: () => boolean
  stderrTail: string[]
}

const clientScript = join(ROOT, 'scripts/load/client.ts')

function spawnClient (c: ClientConfig): Client {
  // `node --import tsx`, not the tsx CLI: the CLI runs node as a child of its own, which a kill of
  // the CLI would leave running.
  const proc = spawn(process.execPath, ['--import', 'tsx', clientScript], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LOAD_CONFIG: JSON.stringify(c) } })
  const stderrTail: string[] = []
  createInterface({ input: proc.stderr! }).on('line', (l) => { stderrTail.push(l); if (stderrTail.length > 30) stderrTail.shift() })
  const queue: Array<Record<string, unknown>> = []
  const waiters = new Set<() => void>()
  createInterface({ input: proc.stdout! }).on('line', (l) => {
    try { queue.push(JSON.parse(l) as Record<string, unknown>) } catch { return }
    for (const w of [...waiters]) w()
  })
  let stopping = false
  let exitCode: number | undefined
  const exited = new Promise<number>(resolve => proc.on('exit', (code, sig) => { exitCode = code ?? (sig !== null ? 128 : 1); for (const w of [...waiters]) w(); resolve(exitCode) }))
  return {
    name: c.name,
    role: c.role,
    proc,
    exited,
    stderrTail,
    crashed: () => exitCode !== undefined && (exitCode !== 0 || !stopping),
    send: (cmd) => { if (cmd.cmd === 'stop') stopping = true; proc.stdin!.write(JSON.stringify(cmd) + '\n') },
    next: async (type, ms) => await new Promise((resolve, reject) => {
      const check = (): void => {
        const i = queue.findIndex(m => m.type === type)
        if (i >= 0) { done(); resolve(queue.splice(i, 1)[0] as { report?: LoadReport }); return }
        if (exitCode !== undefined) { done(); reject(new Error(`${c.name} exited with ${exitCode} before '${type}':\n${stderrTail.slice(-10).join('\n')}`)) }
      }
      const timer = setTimeout(() => { done(); reject(new Error(`${c.name}: no '${type}' within ${ms} ms`)) }, ms)
      const done = (): void => { clearTimeout(timer); waiters.delete(check) }
      waiters.add(check)
      check()
    })
  }
}

async function procStatus (pid: number): Promise<{ rssMb: number, hwmMb: number } | undefined> {
  try {
    const s = await readFile(`/proc/${pid}/status`, 'utf8')
    const kb = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? NaN)
    return { rssMb: Math.round(kb('VmRSS') / 1024), hwmMb: Math.round(kb('VmHWM') / 1024) }
  } catch { return undefined }
}

const ratio = (a: number, b: number): number => b > 0 ? Math.round((a / b) * 10) / 10 : NaN

setupBuild()
const dirs: string[] = []
const clients: Client[] = []
let daemon: Daemon | undefined
let exitCode = 0
try {
  const daemonDir = await tempDir('dms-load-d-')
  dirs.push(daemonDir)
  await dmsJson(['init', '--data-dir', daemonDir])
  daemon = await startDaemon({ dataDir: daemonDir, env: { DMS_LOG_LEVEL: 'info', ...(timing ? { DMS_STAGE_TIMING: '1' } : {}) } })
  const d = daemon
  const idle = await procStatus(d.info.pid)
  log(`daemon ${d.info.peerId} ready, idle RSS ${idle?.rssMb ?? '?'} MB; starting ${CLIENTS} flood clients, a probe, a garbage and a rotating-key client…`)

  const base = { passphrase: PASSPHRASE, daemonPeer: d.info.peerId, daemonAddr: d.info.addrs[0], callTimeoutMs: CALL_TIMEOUT_MS }
  const configs: ClientConfig[] = []
  for (let i = 0; i < CLIENTS; i++) configs.push({ ...base, role: 'flood', name: `flood-${i}`, dataDir: await tempDir('dms-load-c-') })
  configs.push({ ...base, role: 'flood', name: 'probe', dataDir: await tempDir('dms-load-c-') })
  configs.push({ ...base, role: 'garbage', name: 'garbage', dataDir: await tempDir('dms-load-c-') })
  configs.push({ ...base, role: 'rotating', name: 'rotating', dataDir: await tempDir('dms-load-c-') })
  dirs.push(...configs.map(c => c.dataDir))
  // Start them a few at a time: module loading of ten processes at once on two cores is slow.
  const peerOf = new Map<string, string>()
  for (let i = 0; i < configs.length; i += START_BATCH) {
    const batch = configs.slice(i, i + START_BATCH).map(spawnClient)
    clients.push(...batch)
    await Promise.all(batch.map(async c => { const r = await c.next('ready', READY_TIMEOUT_MS); if (r.peerId !== undefined) peerOf.set(r.peerId, c.name) }))
  }
  const flood = clients.filter(c => c.role === 'flood' && c.name !== 'probe')
  const probe = clients.find(c => c.name === 'probe') as Client
  const wellBehaved = [...flood, probe]

  log(`unloaded: ${UNLOADED_CALLS} sequential calls per client, one client at a time…`)
  const unloaded = new Map<string, LoadReport>()
  for (const c of wellBehaved) {
    c.send({ cmd: 'unloaded', calls: UNLOADED_CALLS })
    unloaded.set(c.name, (await c.next('unloaded', UNLOADED_TIMEOUT_MS)).report as LoadReport)
  }

  log(`loaded: ${CLIENTS} × ${INFLIGHT} in flight for ${SECONDS} s, the probe one at a time, garbage and rotating keys beside…`)
  const timingFrom = d.logs.length
  const samples: number[] = []
  // This process is nearly idle meanwhile: its event-loop delay is how late the machine runs a
  // process that wants the CPU, a floor under any client's loaded latency (every process of the
  // test shares this machine's cores).
  const lateness = monitorEventLoopDelay({ resolution: 10 })
  lateness.enable()
  let sampling = true
  const sampler = (async () => {
    const maxSamples = Math.ceil((SECONDS * 1000 + REPLY_SLACK_MS) / RSS_SAMPLE_MS)
    for (let i = 0; i < maxSamples && sampling; i++) {
      const s = await procStatus(d.info.pid)
      if (s !== undefined) samples.push(s.rssMb)
      await new Promise(resolve => setTimeout(resolve, RSS_SAMPLE_MS))
    }
  })()
  for (const c of clients) c.send({ cmd: 'load', seconds: SECONDS, inflight: c === probe ? 1 : c.role === 'rotating' ? ROTATING_INFLIGHT : INFLIGHT })
  const loaded = new Map<string, LoadReport | undefined>()
  await Promise.all(clients.map(async c => {
    try { loaded.set(c.name, (await c.next('load', SECONDS * 1000 + REPLY_SLACK_MS)).report) } catch (err) { loaded.set(c.name, undefined); log(String(err)) }
  }))
  sampling = false
  lateness.disable()
  // the histogram holds each 10 ms timer's whole interval: lateness is what exceeds 10 ms
  const late = (ns: number): number => Math.max(0, Math.round((ns / 1e6 - 10) * 10) / 10)
  const schedulingMs = { p50: late(lateness.percentile(50)), p99: late(lateness.percentile(99)), max: late(lateness.max) }
  await sampler
  const status = await procStatus(d.info.pid)
  const stageTiming = timing ? d.logs.slice(timingFrom).filter(l => l.msg === 'stage timing') : []

  // After the load: does the daemon still answer a well-behaved caller?
  let answersAfter = false
  if (!probe.crashed()) {
    probe.send({ cmd: 'unloaded', calls: 20 })
    try {
      const after = (await probe.next('unloaded', REPLY_SLACK_MS)).report
      answersAfter = after !== undefined && after.ok === after.calls && after.calls > 0
    } catch { answersAfter = false }
  }
  const daemonAlive = d.proc.exitCode === null && d.proc.signalCode === null
  for (const c of clients) if (!c.crashed()) c.send({ cmd: 'stop' })
  await Promise.all(clients.map(async c => { await Promise.race([c.exited, new Promise(resolve => setTimeout(resolve, 30_000))]) }))

  // ---- figures
  type Row = { name: string, role: string, crashed: boolean, ok: number, overloaded: number, timeouts: number, otherErrors: Record<string, number>, unloaded?: { p50Us: number, p99Us: number }, loaded?: { p50Us: number, p99Us: number }, p99Ratio?: number, garbage?: LoadReport['garbage'] }
  const rows: Row[] = clients.map(c => {
    const r = loaded.get(c.name)
    const u = unloaded.get(c.name)
    const errors = { ...(r?.errors ?? {}) }
    const overloaded = errors.Overloaded ?? 0
    const timeouts = errors.Timeout ?? 0
    delete errors.Overloaded
    delete errors.Timeout
    return {
      name: c.name,
      role: c.name === 'probe' ? 'probe' : c.role,
      crashed: c.crashed() || r === undefined,
      ok: r?.ok ?? 0,
      overloaded,
      timeouts,
      otherErrors: errors,
      ...(u !== undefined ? { unloaded: { p50Us: u.latency.p50Us, p99Us: u.latency.p99Us } } : {}),
      ...(r !== undefined && c.role !== 'garbage' ? { loaded: { p50Us: r.latency.p50Us, p99Us: r.latency.p99Us } } : {}),
      ...(u !== undefined && r !== undefined ? { p99Ratio: ratio(r.latency.p99Us, u.latency.p99Us) } : {}),
      ...(r?.garbage !== undefined ? { garbage: r.garbage } : {})
    }
  })
  const daemonWarnings = d.logs.filter(l => typeof l.level === 'number' ? l.level >= 40 : false)
  const warnCounts: Record<string, number> = {}
  for (const l of daemonWarnings) warnCounts[String(l.msg)] = (warnCounts[String(l.msg)] ?? 0) + 1
  const totalOk = rows.filter(r => r.role === 'flood').reduce((a, r) => a + r.ok, 0)
  const wellRows = rows.filter(r => r.role === 'flood' || r.role === 'probe')
  const garbageRow = rows.find(r => r.role === 'garbage')
  const result = {
    config: { clients: CLIENTS, inflight: INFLIGHT, seconds: SECONDS, unloadedCalls: UNLOADED_CALLS, callTimeoutMs: CALL_TIMEOUT_MS, rotatingInflight: ROTATING_INFLIGHT },
    clients: rows,
    floodCallsPerSecond: Math.round(totalOk / SECONDS),
    /** How late this (idle) process's 10 ms timer ran during the load, ms. */
    machineSchedulingDelayMs: schedulingMs,
    daemon: {
      alive: daemonAlive,
      answersAfter,
      idleRssMb: idle?.rssMb,
      peakRssMb: status?.hwmMb,
      maxSampledRssMb: samples.length > 0 ? Math.max(...samples) : undefined,
      endRssMb: status?.rssMb,
      warnings: warnCounts
    },
    verdict: {
      daemonSurvived: daemonAlive && answersAfter,
      noClientCrashed: rows.every(r => !r.crashed),
      everyCallAnswered: rows.every(r => r.timeouts === 0 && Object.keys(r.otherErrors).every(k => !k.startsWith('untyped:'))),
      wellBehavedUnharmedByGarbage: wellRows.every(r => (r.otherErrors.Unreachable ?? 0) === 0) && (garbageRow?.garbage?.streamsDropped ?? 0) > 0,
      probeP99Within10x: (rows.find(r => r.role === 'probe')?.p99Ratio ?? Infinity) <= 10
    }
  }
  const pass = result.verdict.daemonSurvived && result.verdict.noClientCrashed && result.verdict.everyCallAnswered && result.verdict.wellBehavedUnharmedByGarbage
  if (!pass) exitCode = 1

  log('')
  log('client       ok        Overloaded  timeouts  other errors          p50 unloaded→loaded µs     p99 unloaded→loaded µs   p99×')
  for (const r of rows) {
    if (r.role === 'garbage') continue
    const other = Object.entries(r.otherErrors).map(([k, v]) => `${k} ${v}`).join(', ') || '-'
    const p50 = r.unloaded !== undefined && r.loaded !== undefined ? `${r.unloaded.p50Us} → ${r.loaded.p50Us}` : (r.loaded !== undefined ? `- → ${r.loaded.p50Us}` : '-')
    const p99 = r.unloaded !== undefined && r.loaded !== undefined ? `${r.unloaded.p99Us} → ${r.loaded.p99Us}` : (r.loaded !== undefined ? `- → ${r.loaded.p99Us}` : '-')
    log(`${r.name.padEnd(12)} ${String(r.ok).padStart(8)}  ${String(r.overloaded).padStart(10)}  ${String(r.timeouts).padStart(8)}  ${other.padEnd(20)}  ${p50.padStart(24)}  ${p99.padStart(24)}  ${String(r.p99Ratio ?? '-').padStart(6)}${r.crashed ? '   CRASHED' : ''}`)
  }
  if (garbageRow?.garbage !== undefined) {
    const g = garbageRow.garbage
    log(`garbage      ${g.framesSent} frames sent, streams dropped by the daemon ${g.streamsDropped}, replies ${JSON.stringify(g.replies)}${garbageRow.crashed ? '   CRASHED' : ''}`)
  }
  log(`flood throughput ${result.floodCallsPerSecond} calls/s ok in all`)
  log(`machine: how late an idle process's 10 ms timer ran during the load (this machine's scheduling, a floor under any client's latency): p50 ${schedulingMs.p50} ms, p99 ${schedulingMs.p99} ms, max ${schedulingMs.max} ms`)
  log(`daemon: alive ${daemonAlive}, answers after the load ${answersAfter}; RSS idle ${idle?.rssMb ?? '?'} MB, peak (VmHWM) ${status?.hwmMb ?? '?'} MB, max sampled ${result.daemon.maxSampledRssMb ?? '?'} MB`)
  log(`daemon warnings: ${JSON.stringify(warnCounts)}`)
  for (const c of clients) if (c.crashed()) log(`${c.name} crashed; its last stderr lines:\n  ${c.stderrTail.slice(-12).join('\n  ')}`)
  log(`verdict: ${JSON.stringify(result.verdict)} → ${pass ? 'PASS' : 'FAIL'} (the p99 ratio is reported, not judged)`)
  if (timing) {
    log('where frames waited in the daemon, per 5 s report of the loaded phase (ms: p50/p99/max):')
    const f = (x: { p50: number, p99: number, max: number } | undefined): string => x === undefined ? '-' : `${x.p50}/${x.p99}/${x.max}`
    for (const t of stageTiming as Array<{ turnMs?: { p50: number, p99: number, max: number }, roundMs?: { p50: number, p99: number, max: number }, peers?: Record<string, { waitMs: { n: number, p50: number, p99: number, max: number }, handleMs: { n: number, p50: number, p99: number, max: number } }> }>) {
      const parts: string[] = [`turn ${f(t.turnMs)}`, `round ${f(t.roundMs)}`]
      for (const [peer, p] of Object.entries(t.peers ?? {})) {
        const name = peerOf.get(peer) ?? peer.slice(-6)
        if (name === 'probe' || name === 'flood-0' || name === 'rotating') parts.push(`${name}: wait ${f(p.waitMs)} handle ${f(p.handleMs)} (${p.waitMs.n} frames)`)
      }
      log('  ' + parts.join('; '))
    }
  }
  if (json) process.stdout.write(JSON.stringify({ ...result, ...(timing ? { stageTiming } : {}) }) + '\n')
  // for investigations: every line the daemon logged (with DEBUG=… set, libp2p's too)
  if (process.env.LOAD_DAEMON_LOG !== undefined) await writeFile(process.env.LOAD_DAEMON_LOG, d.logs.map(l => JSON.stringify(l)).join('\n') + '\n')
} catch (err) {
  log(`load test failed to run: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
  for (const c of clients) if (c.stderrTail.length > 0) log(`${c.name}'s last stderr lines:\n  ${c.stderrTail.slice(-8).join('\n  ')}`)
  exitCode = 2
} finally {
  for (const c of clients) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL')
  if (daemon !== undefined && daemon.proc.exitCode === null) await daemon.stop()
  await Promise.all(dirs.map(async dir => { await rm(dir, { recursive: true, force: true }) }))
}
process.exit(exitCode)
