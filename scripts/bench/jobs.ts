import '../../src/lib/polyfill.js'
import { callBehavior, openSession, type Session } from '../../src/cli/call.js'
import type { CliGlobals } from '../../src/cli/common.js'
import { addRoot } from '../../src/security/index.js'
import type { FileChunk, JobView } from '../../src/services/jobs/index.js'
import type { AllocationView } from '../../src/services/provider/index.js'
import { PASSPHRASE, cleanup, startDaemon, tempDir, type Daemon } from '../../test/e2e/harness.js'
import setupBuild from '../../test/e2e/global-setup.js'

/**
 * `npm run bench:jobs [-- --parts 40] [-- --work 60000] [-- --quota 0.25] [-- --json]`: a
 * CPU-bound job (prime counting over ranges, awk) of PARTS parts with a reduce step, run from
 * daemon A on N = 1..5 daemons (separate processes from dist/, loopback; the others trust A's node
 * key as a root). Every daemon is onboarded with QUOTA cores and every part asks QUOTA cores, so
 * each node runs one part at a time, and the process executor holds each part to QUOTA of a core
 * with its cgroup (v1 cpu cfs quota here, v2 cpu.max where that is what exists): N daemons stand
 * in for N equal machines on this small box. The job's parallelism is N (A and the first N-1
 * peers that bid).
 *
 * Reports T(N) (submit → result recorded, at the CLI's side of A's API), speedup T(1)/T(N) and its
 * ratio to N, and per part: the work inside the part (measured by the part itself) and the
 * overhead around it (the coordinator starting its deployment → its result recorded, minus the
 * work). The baseline is T(1) of the same run. Every wait is bounded.
 */
const argv = process.argv.slice(2)
const flag = (name: string, dflt: number): number => { const i = argv.indexOf(`--${name}`); return i >= 0 ? Number(argv[i + 1]) : dflt }
const json = argv.includes('--json')
const PARTS = flag('parts', 40)
const WORK = flag('work', 60_000)
const QUOTA = flag('quota', 0.25)
const MAX_N = flag('nodes', 5)
const MiB = 2 ** 20
const JOB_BOUND_MS = 30 * 60_000

function log (s: string): void { (json ? process.stderr : process.stdout).write(s + '\n') }
const pct = (xs: number[], p: number): number => xs.length === 0 ? NaN : [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]

/** Counts primes in [lo, hi) by trial division; the part's own elapsed ms on stderr. */
const PART = `read lo hi; t0=$(date +%s%N); awk -v lo="$lo" -v hi="$hi" 'BEGIN { c = 0; for (n = (lo < 2 ? 2 : lo); n < hi; n++) { p = 1; for (d = 2; d * d <= n; d++) if (n % d == 0) { p = 0; break }; c += p }; print c }'; t1=$(date +%s%N); echo "work-ms $(( (t1 - t0) / 1000000 ))" >&2`
const job = (n: number): string => `name: primes
work:
  command: [sh, -c, ${JSON.stringify(PART)}]
  resources: { cpu: { cores: ${QUOTA} }, ram: { size: 32MiB }, disk: { size: 1MiB } }
split: { range: { from: 0, to: ${PARTS * WORK}, parts: ${PARTS} } }
reduce: { command: [sh, -c, 's=0; while read x; do s=$((s+x)); done; echo $s'] }
parallelism: ${n}
retries: 1
backup: false
`

interface Node { d: Daemon, g: CliGlobals, s: Session }
const call = async <T>(n: Node, path: string, payload: unknown, timeoutMs = 30_000): Promise<T> => await callBehavior<T>(n.g, path, payload, { session: n.s, timeoutMs })

async function runJob (a: Node, n: number): Promise<{ ms: number, v: JobView, result: string }> {
  const t0 = performance.now()
  const { id } = await call<{ id: string }>(a, '/dms/node/job/new', { job: job(n) })
  let v = await call<JobView>(a, '/dms/node/job/status', { id })
  const until = Date.now() + JOB_BOUND_MS
  while (!['Completed', 'Failed', 'Cancelled'].includes(v.status) && Date.now() < until) {
    v = await call<JobView>(a, '/dms/node/job/status', { id, after: v.version }, 5 * 60_000)
  }
  const ms = performance.now() - t0
  if (v.status !== 'Completed') throw new Error(`job on ${n} node(s) ended ${v.status}: ${v.reason}`)
  const r = await call<FileChunk>(a, '/dms/node/job/result', { id })
  return { ms, v, result: Buffer.from(r.data, 'base64').toString('utf8').trim() }
}

setupBuild()
process.env.DMS_PASSPHRASE = PASSPHRASE
const started: Daemon[] = []
const dirs: string[] = []
const nodes: Node[] = []
try {
  // the harness knows a daemon is ready by an info line
  const env = { DMS_LOG_LEVEL: 'info' }
  const a = await startDaemon({ env, readyTimeoutMs: 120_000 })
  started.push(a)
  for (let i = 1; i < MAX_N; i++) {
    const dir = await tempDir('dms-bench-jobs-')
    dirs.push(dir)
    await addRoot(dir, 'dms', a.info.did)
    started.push(await startDaemon({ dataDir: dir, env, args: ['--bootstrap', a.info.addrs[0]], readyTimeoutMs: 120_000 }))
  }
  for (const d of started) {
    const g: CliGlobals = { dataDir: d.dataDir, context: 'user', timeoutMs: 30_000 }
    nodes.push({ d, g, s: await openSession(g) })
  }
  await Promise.all(nodes.map(async n => { await call(n, '/dms/node/onboarding/onboard', { cpuCores: QUOTA, ramBytes: 256 * MiB, diskBytes: 64 * MiB, gpus: [] }) }))
  for (let i = 0; i < 600; i++) {
    const { peers } = await call<{ peers: Array<{ id: string, connected: boolean }> }>(nodes[0], '/dms/node/peers/list', {})
    if (started.slice(1).every(d => peers.some(p => p.id === d.info.peerId && p.connected))) break
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  log(`${MAX_N} daemons, each ${QUOTA} core (onboarded; each part held to it by its cgroup); job: ${PARTS} parts × ${WORK} numbers (primes by trial division), reduce at A`)
  log('NOTE: the machine is shared with other work: figures are noisy')
  const rows: Array<{ n: number, ms: number, speedup: number, efficiency: number, workMs: number, overheadP50: number, overheadP90: number }> = []
  let expected: string | undefined
  for (let n = 1; n <= MAX_N; n++) {
    const { ms, v, result } = await runJob(nodes[0], n)
    expected ??= result
    if (result !== expected) throw new Error(`N=${n}: result ${result}, N=1 gave ${expected}`)
    const work: number[] = []
    const overhead: number[] = []
    for (const p of v.parts) {
      const err = await call<FileChunk>(nodes[0], '/dms/node/job/logs', { id: v.id, part: p.index })
      const m = /work-ms (\d+)/.exec(Buffer.from(err.data, 'base64').toString('utf8'))
      if (m === null || p.recordedMs === undefined) continue
      work.push(Number(m[1]))
      overhead.push(p.recordedMs - Number(m[1]))
    }
    const t1 = rows[0]?.ms ?? ms
    const row = { n, ms: Math.round(ms), speedup: t1 / ms, efficiency: t1 / ms / n, workMs: Math.round(pct(work, 0.5)), overheadP50: Math.round(pct(overhead, 0.5)), overheadP90: Math.round(pct(overhead, 0.9)) }
    rows.push(row)
    log(`N=${n}: T ${row.ms} ms  speedup ${row.speedup.toFixed(2)} (${row.efficiency.toFixed(2)}·N)  part work p50 ${row.workMs} ms  overhead per part p50 ${row.overheadP50} ms p90 ${row.overheadP90} ms  (result ${result}, on ${v.workers.length} node(s), ${v.counts.runs} runs)`)
  }
  if (json) process.stdout.write(JSON.stringify({ parts: PARTS, work: WORK, quota: QUOTA, rows }) + '\n')
} finally {
  await Promise.all(nodes.map(async n => {
    try {
      const { allocations } = await call<{ allocations: AllocationView[] }>(n, '/dms/node/allocations/list', {}, 5_000)
      for (const x of allocations.filter(x => x.status === 'running' || x.status === 'starting' || x.status === 'pending')) {
        await call(n, '/dms/node/allocation/stop', { id: x.id, graceMs: 0 }, 5_000).catch(() => {})
      }
    } catch { /* the daemon may be gone */ }
  }))
  await cleanup(started, dirs)
}
