import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import setupBuild from '../../test/e2e/global-setup.js'
import { BIN, PASSPHRASE, ROOT } from '../../test/e2e/harness.js'
import { cpuSeconds, memory, quantile } from './proc.js'

/**
 * `npm run cluster -- --nodes N [--bootstrap-nodes K] [--concurrency C] [--hello-interval 30s]
 *   [--settle S] [--idle S] [--converge-timeout S] [--top] [--bin path/to/dms.js] [--json]`
 *
 * N `dms run` daemons, each its own process with its own data dir under one temp dir, on
 * 127.0.0.1 only, mDNS off; the first K bootstrap to none, every other to those K. Started C at a
 * time (module loading on a small machine only queues beyond that). Then it measures:
 * - start: the script's start (after the build check) to every daemon's 'dms node ready' log;
 * - hello convergence: when each daemon first logged 'hello heard' for each other's DID (debug
 *   level); per pair (A knows B) the time from when both were ready, p50/p99, and when the last
 *   pair converged counted from the last daemon's ready;
 * - idle memory of every daemon after convergence and `--settle` seconds (p50, max): VmRSS, its
 *   private part (RssAnon) and PSS (scripts/cluster/proc.ts);
 * - idle CPU: all daemons' utime + stime over `--idle` seconds (/proc/PID/stat), in cores;
 * then stops them all: SIGTERM, a bounded wait, SIGKILL for stragglers, the temp dir removed.
 * Ctrl-C (or SIGTERM) of the script does the same. Prints a table and, last, one JSON line.
 * With `--top`, also the daemons' most frequent log messages during the idle window (what
 * woke them). `--bin` runs another checkout's `bin/dms.js` (a baseline to compare with).
 */
const { values: flags } = parseArgs({
  options: {
    nodes: { type: 'string', default: '20' },
    'bootstrap-nodes': { type: 'string', default: '1' },
    concurrency: { type: 'string', default: '4' },
    'hello-interval': { type: 'string' },
    settle: { type: 'string', default: '10' },
    idle: { type: 'string', default: '30' },
    'converge-timeout': { type: 'string', default: '600' },
    top: { type: 'boolean', default: false },
    bin: { type: 'string' },
    json: { type: 'boolean', default: false }
  }
})
function intFlag (name: keyof typeof flags, min: number): number {
  const v = flags[name] as string
  const n = Number(v)
  if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, got '${v}'`)
  return n
}
const NODES = intFlag('nodes', 1)
const BOOTSTRAP_NODES = Math.min(NODES, intFlag('bootstrap-nodes', 1))
const CONCURRENCY = intFlag('concurrency', 1)
const SETTLE_S = intFlag('settle', 0)
const IDLE_S = intFlag('idle', 1)
const CONVERGE_TIMEOUT_S = intFlag('converge-timeout', 1)
/** One daemon's start may take this long: on 2 cores, 100 daemons already up share them with it. */
const READY_TIMEOUT_MS = 600_000
/** SIGTERM → exit: each daemon's own bound is 4.5 s, but 100 stopping at once share 2 cores. */
const STOP_WAIT_MS = 30_000
/** Log lines kept per daemon for a diagnosis. */
const TAIL_LINES = 20
const DMS = flags.bin ?? BIN

const out = (s: string): void => { (flags.json === true ? process.stderr : process.stdout).write(s + '\n') }

interface Member {
  index: number
  dir: string
  proc: ChildProcess
  exited: Promise<number>
  /** From daemon.json once ready. */
  pid?: number
  did?: string
  addr?: string
  /** Unix ms of the 'dms node ready' line. */
  readyAt?: number
  /** DID → unix ms of its first 'hello heard' line here. */
  known: Map<string, number>
  /** Messages logged while counting (`--top`): msg → count. */
  counting?: Map<string, number>
  warnings: number
  tail: string[]
}

const members: Member[] = []
let root: string | undefined
let stopping = false
/** Called on every 'hello heard' line: the convergence wait checks then. */
let onHello: (() => void) | undefined

function spawnMember (index: number, bootstrap: string[]): { member: Member, ready: Promise<void> } {
  const dir = join(root as string, `n${String(index).padStart(3, '0')}`)
  const args = [DMS, 'run', '--data-dir', dir, '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', '--api-port', '0', ...bootstrap.flatMap(a => ['--bootstrap', a])]
  const env: Record<string, string | undefined> = { ...process.env, DMS_PASSPHRASE: PASSPHRASE, DMS_LOG_FORMAT: 'json', DMS_LOG_LEVEL: 'debug', DMS_HOME: undefined }
  if (flags['hello-interval'] !== undefined) env.DMS_HELLO_INTERVAL = flags['hello-interval']
  // the command itself, as a user runs it: its shebang gives node the daemon's V8 flags (bin/dms.js)
  const proc = spawn(args[0], args.slice(1), { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] })
  const exited = new Promise<number>(resolve => proc.on('exit', (c, sig) => { resolve(c ?? (sig === 'SIGKILL' ? 137 : 1)) }))
  const m: Member = { index, dir, proc, exited, known: new Map(), warnings: 0, tail: [] }
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`daemon ${index} not ready within ${READY_TIMEOUT_MS} ms:\n${m.tail.join('\n')}`)) }, READY_TIMEOUT_MS)
    void exited.then(code => { clearTimeout(timer); reject(new Error(`daemon ${index} exited with ${code}${m.readyAt === undefined ? ' before it was ready' : ''}:\n${m.tail.join('\n')}`)) })
    createInterface({ input: proc.stderr! }).on('line', line => {
      m.tail.push(line)
      if (m.tail.length > TAIL_LINES) m.tail.shift()
      // most lines are debug chatter: parse only what is read
      const hello = line.includes('"hello heard"')
      const isReady = !hello && line.includes('"dms node ready"')
      const warn = /"level":(40|50|60)/.test(line)
      if (!hello && !isReady && !warn && m.counting === undefined) return
      let rec: Record<string, unknown>
      try { rec = JSON.parse(line) } catch { return }
      if (m.counting !== undefined) { const k = String(rec.msg); m.counting.set(k, (m.counting.get(k) ?? 0) + 1) }
      if (warn) m.warnings++
      if (hello && typeof rec.did === 'string' && !m.known.has(rec.did)) {
        m.known.set(rec.did, Number(rec.time))
        onHello?.()
      } else if (isReady) {
        m.readyAt = Number(rec.time)
        void readFile(join(dir, 'daemon.json'), 'utf8').then(text => {
          const info = JSON.parse(text) as { pid: number, did: string, addrs: string[] }
          m.pid = info.pid
          m.did = info.did
          m.addr = info.addrs[0]
          clearTimeout(timer)
          resolve()
        }, reject)
      }
    })
  })
  return { member: m, ready }
}

/** SIGTERM to all, a bounded wait, SIGKILL to the rest; then the temp dir goes. */
async function stopAll (): Promise<{ killed: number }> {
  stopping = true
  const alive = (m: Member): boolean => m.proc.exitCode === null && m.proc.signalCode === null
  for (const m of members) if (alive(m)) m.proc.kill('SIGTERM')
  let timer: NodeJS.Timeout | undefined
  await Promise.race([Promise.all(members.map(async m => await m.exited)), new Promise(resolve => { timer = setTimeout(resolve, STOP_WAIT_MS) })])
  clearTimeout(timer)
  const stragglers = members.filter(alive)
  for (const m of stragglers) m.proc.kill('SIGKILL')
  await Promise.all(stragglers.map(async m => await m.exited))
  if (root !== undefined) await rm(root, { recursive: true, force: true })
  return { killed: stragglers.length }
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    out(`\n${sig}: stopping ${members.length} daemons…`)
    void stopAll().finally(() => process.exit(130))
  })
}

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const round = (x: number, digits = 0): number => Math.round(x * 10 ** digits) / 10 ** digits
const MB = 1024 * 1024

/** Starts every daemon, at most CONCURRENCY loading at once; the first BOOTSTRAP_NODES go first. */
async function startAll (): Promise<void> {
  const first = spawnMember(0, [])
  members.push(first.member)
  await first.ready
  const bootstrap = [first.member.addr as string]
  let next = 1
  const startOne = async (): Promise<void> => {
    const i = next++
    const s = spawnMember(i, i < BOOTSTRAP_NODES ? bootstrap.slice(0, 1) : bootstrap)
    members.push(s.member)
    await s.ready
  }
  // the other bootstrap nodes, then everyone else bootstraps to all of them
  while (next < BOOTSTRAP_NODES && !stopping) {
    await startOne()
    bootstrap.push(members[next - 1].addr as string)
  }
  const worker = async (): Promise<void> => {
    while (next < NODES && !stopping) await startOne()
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
}

/** Resolves once every daemon knows every other's DID; rejects after the timeout. */
async function converged (timeoutMs: number): Promise<void> {
  const dids = members.map(m => m.did as string)
  const done = (): boolean => members.every(m => dids.every(d => d === m.did || m.known.has(d)))
  if (done()) return
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      onHello = undefined
      const missing = members.map(m => dids.filter(d => d !== m.did && !m.known.has(d)).length).filter(n => n > 0)
      reject(new Error(`hello did not converge within ${timeoutMs / 1000} s: ${missing.length} daemons miss ${missing.reduce((a, b) => a + b, 0)} DIDs`))
    }, timeoutMs)
    onHello = () => { if (done()) { clearTimeout(timer); onHello = undefined; resolve() } }
  })
}

async function main (): Promise<Record<string, unknown>> {
  const tBuild = performance.now()
  if (flags.bin === undefined) setupBuild()
  const buildMs = performance.now() - tBuild
  root = await mkdtemp(join(tmpdir(), 'dms-cluster-'))
  await mkdir(root, { recursive: true })
  const t0 = Date.now()
  out(`starting ${NODES} daemons under ${root} (${CONCURRENCY} at a time, bootstrap to the first ${BOOTSTRAP_NODES})…`)
  let lastReport = 0
  const progress = setInterval(() => {
    const ready = members.filter(m => m.readyAt !== undefined).length
    if (ready !== lastReport) out(`  ${ready}/${NODES} ready after ${round((Date.now() - t0) / 1000, 1)} s`)
    lastReport = ready
  }, 10_000)
  try { await startAll() } finally { clearInterval(progress) }
  const lastReady = Math.max(...members.map(m => m.readyAt as number))
  const startMs = lastReady - t0
  const readyMs = members.map(m => (m.readyAt as number) - t0)
  out(`all ${NODES} ready after ${round(startMs / 1000, 1)} s; waiting until every daemon knows every DID…`)

  await converged(CONVERGE_TIMEOUT_S * 1000)
  const toKnow: number[] = []
  let convergedAt = lastReady
  for (const a of members) {
    for (const b of members) {
      if (a === b) continue
      const t = a.known.get(b.did as string) as number
      toKnow.push(t - Math.max(a.readyAt as number, b.readyAt as number))
      convergedAt = Math.max(convergedAt, t)
    }
  }
  out(`converged ${round((convergedAt - lastReady) / 1000, 2)} s after the last ready; settling ${SETTLE_S} s…`)

  await sleep(SETTLE_S * 1000)
  const mem = (await Promise.all(members.map(async m => await memory(m.pid as number)))).filter(x => x !== undefined)
  const rss = mem.map(x => x.rss)
  const anon = mem.map(x => x.anon)
  const pss = mem.map(x => x.pss)
  out(`idle RSS p50 ${round(quantile(rss, 0.5) / MB)} MB (private ${round(quantile(anon, 0.5) / MB)} MB); measuring idle CPU over ${IDLE_S} s…`)

  if (flags.top === true) for (const m of members) m.counting = new Map()
  const before = await Promise.all(members.map(async m => await cpuSeconds(m.pid as number)))
  const w0 = performance.now()
  await sleep(IDLE_S * 1000)
  const after = await Promise.all(members.map(async m => await cpuSeconds(m.pid as number)))
  const wallS = (performance.now() - w0) / 1000
  const perDaemon = members.map((_, i) => ((after[i] ?? NaN) - (before[i] ?? NaN)) / wallS)
  const top = new Map<string, number>()
  for (const m of members) for (const [k, n] of m.counting ?? []) top.set(k, (top.get(k) ?? 0) + n)
  for (const m of members) m.counting = undefined

  return {
    nodes: NODES,
    bootstrapNodes: BOOTSTRAP_NODES,
    concurrency: CONCURRENCY,
    helloInterval: flags['hello-interval'] ?? 'default',
    bin: DMS,
    buildMs: round(buildMs),
    startMs,
    readyP50Ms: quantile(readyMs, 0.5),
    convergeAfterLastReadyMs: convergedAt - lastReady,
    toKnowP50Ms: quantile(toKnow, 0.5),
    toKnowP99Ms: quantile(toKnow, 0.99),
    toKnowMaxMs: Math.max(...toKnow),
    idleRssP50MB: round(quantile(rss, 0.5) / MB, 1),
    idleRssMaxMB: round(Math.max(...rss) / MB, 1),
    idleRssAnonP50MB: round(quantile(anon, 0.5) / MB, 1),
    idleRssAnonMaxMB: round(Math.max(...anon) / MB, 1),
    idlePssP50MB: round(quantile(pss, 0.5) / MB, 1),
    idlePssTotalMB: round(pss.reduce((a, b) => a + b, 0) / MB),
    idleCpuS: IDLE_S,
    idleCpuCores: round(perDaemon.reduce((a, b) => a + b, 0), 3),
    idleCpuPerDaemonMillicores: round(quantile(perDaemon, 0.5) * 1000, 1),
    idleCpuMaxDaemonMillicores: round(Math.max(...perDaemon) * 1000, 1),
    warnings: members.reduce((a, m) => a + m.warnings, 0),
    ...(flags.top === true ? { idleLogTop: Object.fromEntries([...top].sort((a, b) => b[1] - a[1]).slice(0, 15)) } : {})
  }
}

let exitCode = 0
let result: Record<string, unknown> | undefined
try {
  result = await main()
} catch (err) {
  exitCode = 1
  out(`cluster failed: ${err instanceof Error ? err.message : String(err)}`)
}
out(`stopping ${members.length} daemons…`)
const t = performance.now()
const { killed } = await stopAll()
out(`stopped in ${round((performance.now() - t) / 1000, 1)} s${killed > 0 ? ` (${killed} needed SIGKILL)` : ''}; ${root ?? ''} removed`)
if (result !== undefined) {
  result = { ...result, stopMs: round(performance.now() - t), killed }
  const rows: Array<[string, string]> = [
    ['daemons', `${NODES} (bootstrap to the first ${BOOTSTRAP_NODES}; ${CONCURRENCY} started at a time; hello interval ${String(result.helloInterval)})`],
    ['start: script → all ready', `${round(Number(result.startMs) / 1000, 1)} s (half ready after ${round(Number(result.readyP50Ms) / 1000, 1)} s)`],
    ['hello: converged after the last ready', `${round(Number(result.convergeAfterLastReadyMs) / 1000, 2)} s`],
    ['hello: time-to-know per pair p50 / p99 / max', `${round(Number(result.toKnowP50Ms))} / ${round(Number(result.toKnowP99Ms))} / ${round(Number(result.toKnowMaxMs))} ms (from both ready)`],
    ['idle RSS per daemon p50 / max', `${String(result.idleRssP50MB)} / ${String(result.idleRssMaxMB)} MB`],
    ['  private (RssAnon) p50 / max', `${String(result.idleRssAnonP50MB)} / ${String(result.idleRssAnonMaxMB)} MB`],
    ['  PSS p50 / all daemons', `${String(result.idlePssP50MB)} / ${String(result.idlePssTotalMB)} MB`],
    [`idle CPU of all daemons (${IDLE_S} s)`, `${String(result.idleCpuCores)} cores (per daemon p50 ${String(result.idleCpuPerDaemonMillicores)}, max ${String(result.idleCpuMaxDaemonMillicores)} millicores)`],
    ['warnings/errors logged', String(result.warnings)],
    ['stop', `${round(Number(result.stopMs) / 1000, 1)} s, ${killed} SIGKILLed`]
  ]
  const w = Math.max(...rows.map(r => r[0].length))
  out('')
  for (const [k, v] of rows) out(`${k.padEnd(w)}  ${v}`)
  if (result.idleLogTop !== undefined) {
    out('\nlog messages of all daemons during the idle window:')
    for (const [k, n] of Object.entries(result.idleLogTop as Record<string, number>)) out(`  ${String(n).padStart(7)}  ${k}`)
  }
  process.stdout.write(JSON.stringify({ cluster: result }) + '\n')
}
process.exit(exitCode)
