import '../../src/lib/polyfill.js'
import { callBehavior, openSession, type Session } from '../../src/cli/call.js'
import type { CliGlobals } from '../../src/cli/common.js'
import type { Handle } from '../../src/actor/types.js'
import { addRoot } from '../../src/security/index.js'
import type { DeploymentView } from '../../src/services/orchestrator/index.js'
import type { AllocateReply, AllocationView } from '../../src/services/provider/index.js'
import type { LedgerSnapshot } from '../../src/services/resources/index.js'
import { PASSPHRASE, cleanup, startDaemon, tempDir, type Daemon } from '../../test/e2e/harness.js'
import setupBuild from '../../test/e2e/global-setup.js'

/**
 * `npm run bench:deploy [-- --quick] [-- --json]`: deployments across three daemons (separate
 * processes from dist/, on loopback; B and C bootstrap to A and trust A's node key as a root of
 * their `dms` context). A's user deploys through A's API, as `dms deploy` does.
 *
 * 1. A 3-node ensemble of process services (one per provider, colocation off), `deployment/new` →
 *    Running, then `deployment/shutdown` → nothing of it held in any daemon's ledger; once with
 *    no depends_on (one start layer) and once with the chain a ← b ← c (three layers),
 *    interleaved with the baseline: the same three allocations made by hand on the three daemons
 *    at once (commit, allocate, start, status until running, each daemon's own user through its
 *    own API), reverted by hand. Prints p50/p90/max and the ratio deploy / by-hand: what bids,
 *    placement and layers cost over the raw provider calls. Goal: ≤ 2 s to Running.
 * 2. Many such deployments submitted at once (each needs all three providers; the slices are
 *    sized so that all fit): counts of Running and Failed, time until all settled, the reason of
 *    every Failed; then all shut down and every daemon checked for leaks (ledger reservations and
 *    allocations, port leases, non-terminal allocations).
 *
 * Every wait is bounded: a deployment that does not settle is reported as such, not waited for.
 */
const args = new Set(process.argv.slice(2))
const quick = args.has('--quick')
const json = args.has('--json')
const ROUNDS = quick ? 3 : 10
const CONCURRENT = quick ? 5 : 20
/** Deadline given to each deployment: past it the orchestrator fails it with its own reason. */
const DEPLOY_TIMEOUT_MS = 60_000
/** The bench's own bound on waiting for one to settle: longer than the deployment's deadline. */
const SETTLE_BOUND_MS = DEPLOY_TIMEOUT_MS + 30_000
const RELEASE_BOUND_MS = 15_000
const MiB = 2 ** 20
const SLICE = { cpuCores: 1, ramBytes: 512 * MiB, diskBytes: 64 * MiB, gpus: [] }
const ONE = { cpuCores: 0.05, ramBytes: 16 * MiB, diskBytes: 1 * MiB }
const SMALL = { cpuCores: 0.02, ramBytes: 8 * MiB, diskBytes: 1 * MiB }
const COMMAND = ['sleep', '3600']

function log (s: string): void { (json ? process.stderr : process.stdout).write(s + '\n') }
const pct = (xs: number[], p: number): number => xs.length === 0 ? NaN : [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]
const round = (x: number): number => Math.round(x)
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const stats = (xs: number[]): { n: number, p50: number, p90: number, max: number } => ({ n: xs.length, p50: round(pct(xs, 0.5)), p90: round(pct(xs, 0.9)), max: round(Math.max(...xs)) })

/** An ensemble of three process services a, b, c on nodes n1, n2, n3; `chain`: b after a, c after b. */
function ensemble (r: typeof ONE, chain: boolean): string {
  const svc = (name: string, dep?: string): string => `
  ${name}:
    executor: process
    resources: { cpu: { cores: ${r.cpuCores} }, ram: { size: ${r.ramBytes / MiB}MiB }, disk: { size: ${r.diskBytes / MiB}MiB } }
    execution: { cmd: ${JSON.stringify(COMMAND)} }${chain && dep !== undefined ? `\n    depends_on: [${dep}]` : ''}`
  return `version: V1
allocations:${svc('a')}${svc('b', 'a')}${svc('c', 'b')}
nodes:
  n1: { allocations: [a] }
  n2: { allocations: [b] }
  n3: { allocations: [c] }
`
}

interface Node { name: string, d: Daemon, g: CliGlobals, s: Session }
const nodes: Node[] = []
const call = async <T>(n: Node, path: string, payload: unknown, opts: { to?: Handle, timeoutMs?: number } = {}): Promise<T> =>
  await callBehavior<T>(n.g, path, payload, { session: n.s, ...opts })

/** Ids in a daemon's ledger (reservations and allocations) that belong to `ensembleId`, or all with `undefined`. */
async function held (n: Node, ensembleId?: string): Promise<string[]> {
  const l = await call<LedgerSnapshot>(n, '/dms/node/resources/ledger', {})
  return [...l.reservations, ...l.allocations].map(r => r.id).filter(id => ensembleId === undefined || id.startsWith(`${ensembleId}.`))
}

/** Ensembles still held somewhere when the call that should have released them had returned. */
const heldAfterReturn: string[] = []

/**
 * Polls every daemon's ledger until none holds anything of `ensembleId`; ms from `t0`, or
 * undefined past the bound. Called once the shutdown (or revert) answered, which it does only
 * after the providers released: a first look that still finds something is noted.
 */
async function releasedAfter (ensembleId: string, t0: number): Promise<number | undefined> {
  const answered = performance.now() - t0
  let first = ''
  for (let i = 0; i < 1_000 && performance.now() - t0 < RELEASE_BOUND_MS; i++) {
    const left = await Promise.all(nodes.map(async n => (await held(n, ensembleId)).map(id => `${n.name}:${id.slice(id.lastIndexOf('.') + 1)}`)))
    if (left.every(l => l.length === 0)) {
      if (first !== '') heldAfterReturn.push(`${ensembleId.slice(0, 12)}: ${first} held when the call answered (${round(answered)} ms), all released at ${round(performance.now() - t0)} ms${logsAbout(ensembleId)}`)
      return performance.now() - t0
    }
    if (i === 0) first = left.flat().join(', ')
    await sleep(10)
  }
  heldAfterReturn.push(`${ensembleId.slice(0, 12)}: ${first} held when the call answered, still held after ${RELEASE_BOUND_MS / 1000} s${logsAbout(ensembleId)}`)
  return undefined
}

/** What the daemons logged at warn or above about an ensemble (for a diagnosis in the report). */
function logsAbout (ensembleId: string): string {
  const lines = nodes.flatMap(n => n.d.logs.filter(l => Number(l.level) >= 40 && JSON.stringify(l).includes(ensembleId.slice(0, 16))).map(l => `${n.name}: ${String(l.msg)} ${JSON.stringify(l.err ?? '')}`))
  return lines.length === 0 ? '; nothing logged at warn' : `; logged: ${lines.slice(0, 6).join(' | ')}`
}

/** How many distinct providers run a deployment (colocation is off: it must be 3). */
async function providers (id: string): Promise<number> {
  const m = await call<{ nodes: Record<string, { peer: string }> }>(nodes[0], '/dms/node/deployment/manifest', { id })
  return new Set(Object.values(m.nodes).map(n => n.peer)).size
}

/** Follows a deployment by long polls until Running, Completed or Failed, or the bench's bound. */
async function settle (id: string, t0: number): Promise<{ v: DeploymentView, ms: number, settled: boolean }> {
  const a = nodes[0]
  let v = await call<DeploymentView>(a, '/dms/node/deployment/status', { id })
  for (let i = 0; i < 500; i++) {
    if (v.status === 'Running' || v.status === 'Completed' || v.status === 'Failed') return { v, ms: performance.now() - t0, settled: true }
    const left = SETTLE_BOUND_MS - (performance.now() - t0)
    if (left <= 0) break
    v = await call<DeploymentView>(a, '/dms/node/deployment/status', { id, after: v.transitionCount }, { timeoutMs: Math.max(1_000, Math.min(10_000, left)) })
  }
  return { v, ms: performance.now() - t0, settled: false }
}

/** ms between the deployment's creation and its first transition to `status` (the orchestrator's own clock). */
function phaseAt (v: DeploymentView, status: string): number {
  const t = v.transitions.find(x => x.status === status)
  return t === undefined ? NaN : Date.parse(t.at) - Date.parse(v.createdAt)
}

interface DeployRun { ok: boolean, providers: number, toRunningMs: number, daemonMs: number, bidsMs: number, commitMs: number, provisionMs: number, shutdownMs: number, releasedMs: number | undefined, status: string, reason: string }

async function deployOnce (chain: boolean): Promise<DeployRun> {
  const a = nodes[0]
  const t0 = performance.now()
  const { ensembleId } = await call<{ ensembleId: string }>(a, '/dms/node/deployment/new', { ensemble: ensemble(ONE, chain), timeoutMs: DEPLOY_TIMEOUT_MS, colocate: false })
  const { v, ms, settled } = await settle(ensembleId, t0)
  const spread = v.status === 'Running' ? await providers(ensembleId) : 0
  const t1 = performance.now()
  await call(a, '/dms/node/deployment/shutdown', { id: ensembleId })
  const shutdownMs = performance.now() - t1
  const releasedMs = await releasedAfter(ensembleId, t1)
  return {
    ok: v.status === 'Running',
    providers: spread,
    toRunningMs: ms,
    daemonMs: phaseAt(v, 'Running'),
    bidsMs: phaseAt(v, 'Committing'),
    commitMs: phaseAt(v, 'Provisioning') - phaseAt(v, 'Committing'),
    provisionMs: phaseAt(v, 'Running') - phaseAt(v, 'Provisioning'),
    shutdownMs,
    releasedMs,
    status: settled ? v.status : `${v.status} (not settled within ${SETTLE_BOUND_MS / 1000} s)`,
    reason: v.reason
  }
}

let handRound = 0
/** The baseline: the same three allocations, each daemon's own user on its own provider, all at once. */
async function byHandOnce (): Promise<{ ok: boolean, toRunningMs: number, revertMs: number, releasedMs: number | undefined, reason: string }> {
  const ensembleId = `bench-hand-${handRound++}`
  const t0 = performance.now()
  const views = await Promise.all(nodes.map(async n => {
    await call(n, '/dms/deployment/commit', { ensembleId, allocations: [{ name: 'svc', resources: ONE }] })
    const r = await call<AllocateReply>(n, '/dms/deployment/allocate', { ensembleId, allocations: [{ name: 'svc', spec: { type: 'service', executor: 'process', command: COMMAND } }] })
    const handle = r.allocations[0].handle as Handle
    let v = await call<AllocationView>(n, '/dms/allocation/start', {}, { to: handle })
    // as fast as the node allows: ask again at once (bounded) until it runs or ended
    for (let i = 0; i < 2_000 && (v.status === 'pending' || v.status === 'starting'); i++) {
      await sleep(5)
      v = await call<AllocationView>(n, '/dms/allocation/status', {}, { to: handle })
    }
    return v
  }))
  const toRunningMs = performance.now() - t0
  const t1 = performance.now()
  await Promise.all(nodes.map(async n => { await call(n, '/dms/deployment/revert', { ensembleId }) }))
  const revertMs = performance.now() - t1
  const releasedMs = await releasedAfter(ensembleId, t1)
  const bad = views.filter(v => v.status !== 'running')
  return { ok: bad.length === 0, toRunningMs, revertMs, releasedMs, reason: bad.map(v => `${v.id} ${v.status}: ${v.reason}`).join('; ') }
}

/** What a daemon still holds: ledger entries, port leases, allocations not ended. */
async function leftovers (n: Node): Promise<{ ledger: string[], leases: string[], live: string[] }> {
  const ports = await call<{ leases: Array<{ port: number, allocationId: string }> }>(n, '/dms/node/ports/list', {})
  const { allocations } = await call<{ allocations: AllocationView[] }>(n, '/dms/node/allocations/list', {})
  return {
    ledger: await held(n),
    leases: ports.leases.map(l => `${l.port}:${l.allocationId}`),
    live: allocations.filter(x => x.status === 'pending' || x.status === 'starting' || x.status === 'running').map(x => `${x.id} ${x.status}`)
  }
}

// The daemons must run from dist/, as installed (bin/dms.js falls back to the slower sources).
setupBuild()
process.env.DMS_PASSPHRASE = PASSPHRASE
const started: Daemon[] = []
const dirs: string[] = []
try {
  const env = { DMS_LOG_LEVEL: 'info' }
  const a = await startDaemon({ env })
  started.push(a)
  // B and C trust A's node key as a root (specs/capabilities.md §14): A's orchestrator actors
  // act for A's node on them with tokens node → orchestrator chained on that root.
  const others = await Promise.all(['B', 'C'].map(async () => {
    const dir = await tempDir('dms-bench-deploy-')
    dirs.push(dir)
    await addRoot(dir, 'dms', a.info.did)
    const d = await startDaemon({ dataDir: dir, env, args: ['--bootstrap', a.info.addrs[0]] })
    started.push(d)
    return d
  }))
  for (const [i, d] of [a, ...others].entries()) {
    const g: CliGlobals = { dataDir: d.dataDir, context: 'user', timeoutMs: 30_000 }
    nodes.push({ name: 'ABC'[i], d, g, s: await openSession(g) })
  }
  await Promise.all(nodes.map(async n => { await call(n, '/dms/node/onboarding/onboard', SLICE) }))
  // A must be connected to both before bids are asked for (a bound, not a sleep)
  for (let i = 0; ; i++) {
    const { peers } = await call<{ peers: Array<{ id: string, connected: boolean }> }>(nodes[0], '/dms/node/peers/list', {})
    if (others.every(d => peers.some(p => p.id === d.info.peerId && p.connected))) break
    if (i >= 100) throw new Error('A is not connected to B and C after 10 s')
    await sleep(100)
  }
  log(`three daemons (A ${a.info.peerId.slice(-6)}, B ${others[0].info.peerId.slice(-6)}, C ${others[1].info.peerId.slice(-6)}), each onboarded ${SLICE.cpuCores} core, ${SLICE.ramBytes / MiB} MiB, ${SLICE.diskBytes / MiB} MiB disk`)

  // warm-up (gossip mesh, first spawns, JIT): not counted, but it must work
  const warm = await deployOnce(false)
  await byHandOnce()
  log(`warm-up deployment: ${warm.status} in ${round(warm.toRunningMs)} ms${warm.ok ? '' : ` — ${warm.reason}`}`)

  // 1. one deployment at a time, interleaved with the baseline
  log(`measuring ${ROUNDS} rounds of: deploy (no depends_on), deploy (chain a ← b ← c), by hand; each followed by shutdown or revert…`)
  const flat: DeployRun[] = []
  const chain: DeployRun[] = []
  const hand: Array<Awaited<ReturnType<typeof byHandOnce>>> = []
  for (let i = 0; i < ROUNDS; i++) {
    flat.push(await deployOnce(false))
    chain.push(await deployOnce(true))
    hand.push(await byHandOnce())
  }
  const okRuns = (xs: DeployRun[]): DeployRun[] => xs.filter(x => x.ok)
  const summary = (xs: DeployRun[]) => {
    const ok = okRuns(xs)
    return {
      running: ok.length,
      onFewerThan3Providers: ok.filter(x => x.providers !== 3).length,
      failed: xs.filter(x => !x.ok).map(x => `${x.status}: ${x.reason}`),
      toRunning: stats(ok.map(x => x.toRunningMs)),
      onDaemon: stats(ok.map(x => x.daemonMs)),
      phasesP50: { bids: round(pct(ok.map(x => x.bidsMs), 0.5)), commit: round(pct(ok.map(x => x.commitMs), 0.5)), provision: round(pct(ok.map(x => x.provisionMs), 0.5)) },
      shutdownP50: round(pct(xs.map(x => x.shutdownMs), 0.5)),
      releasedP50: round(pct(xs.flatMap(x => x.releasedMs ?? []), 0.5)),
      notReleased: xs.filter(x => x.releasedMs === undefined).length
    }
  }
  const handOk = hand.filter(h => h.ok)
  const r1 = {
    rounds: ROUNDS,
    heldAfterReturn,
    flat: summary(flat),
    chain: summary(chain),
    byHand: {
      running: handOk.length,
      failed: hand.filter(h => !h.ok).map(h => h.reason),
      toRunning: stats(handOk.map(h => h.toRunningMs)),
      revertP50: round(pct(hand.map(h => h.revertMs), 0.5)),
      releasedP50: round(pct(hand.flatMap(h => h.releasedMs ?? []), 0.5)),
      notReleased: hand.filter(h => h.releasedMs === undefined).length
    },
    ratioP50: {
      flat: Math.round(pct(okRuns(flat).map(x => x.toRunningMs), 0.5) / pct(handOk.map(h => h.toRunningMs), 0.5) * 10) / 10,
      chain: Math.round(pct(okRuns(chain).map(x => x.toRunningMs), 0.5) / pct(handOk.map(h => h.toRunningMs), 0.5) * 10) / 10
    }
  }
  type S = ReturnType<typeof stats>
  const row = (name: string, ok: number, s: S, extra: string): string =>
    `  ${name.padEnd(30)} ${String(ok).padStart(2)}/${ROUNDS}  p50 ${String(s.p50).padStart(5)} ms  p90 ${String(s.p90).padStart(5)} ms  max ${String(s.max).padStart(5)} ms   ${extra}`
  const f = r1.flat
  const c = r1.chain
  log('')
  log(`3-node ensemble → Running (client, new → status Running), ${ROUNDS} rounds interleaved:`)
  log(row('deploy, no depends_on', f.running, f.toRunning, `on A: ${f.onDaemon.p50} ms (bids ${f.phasesP50.bids}, commit ${f.phasesP50.commit}, allocate+start ${f.phasesP50.provision})`))
  log(row('deploy, chain a ← b ← c', c.running, c.toRunning, `on A: ${c.onDaemon.p50} ms (bids ${c.phasesP50.bids}, commit ${c.phasesP50.commit}, allocate+start ${c.phasesP50.provision})`))
  log(row('by hand (3 providers at once)', r1.byHand.running, r1.byHand.toRunning, 'commit + allocate + start + status, in parallel'))
  log(`  deploy / by-hand p50: ${r1.ratioP50.flat}× (no depends_on), ${r1.ratioP50.chain}× (chain)   goal: ≤ 2000 ms to Running (DMS's bid window alone is 5 s)`)
  log(`  shutdown call p50 ${f.shutdownP50} ms / ${c.shutdownP50} ms (chain); until no ledger holds anything of it p50 ${f.releasedP50} / ${c.releasedP50} ms; by-hand revert ${r1.byHand.revertP50} ms, released ${r1.byHand.releasedP50} ms`)
  for (const [name, s] of [['no depends_on', f], ['chain', c]] as const) {
    for (const why of s.failed) log(`  FAILED (${name}): ${why}`)
    if (s.onFewerThan3Providers > 0) log(`  PLACED ON FEWER THAN 3 PROVIDERS (${name}): ${s.onFewerThan3Providers}`)
    if (s.notReleased > 0) log(`  NOT RELEASED within ${RELEASE_BOUND_MS / 1000} s (${name}): ${s.notReleased}`)
  }
  for (const why of r1.byHand.failed) log(`  FAILED (by hand): ${why}`)
  for (const h of heldAfterReturn) log(`  STILL HELD when shutdown/revert had answered: ${h}`)

  // 2. many at once
  log('')
  log(`${CONCURRENT} deployments submitted at once (each needs all 3 providers; ${SMALL.cpuCores} cores, ${SMALL.ramBytes / MiB} MiB each, so all fit)…`)
  const t0 = performance.now()
  const submitted = await Promise.all(Array.from({ length: CONCURRENT }, async () => {
    try {
      return (await call<{ ensembleId: string }>(nodes[0], '/dms/node/deployment/new', { ensemble: ensemble(SMALL, false), timeoutMs: DEPLOY_TIMEOUT_MS, colocate: false })).ensembleId
    } catch (err) { return err as Error }
  }))
  const submitMs = performance.now() - t0
  const ids = submitted.filter((x): x is string => typeof x === 'string')
  const settled = await Promise.all(ids.map(async id => {
    try { return { id, ...await settle(id, t0) } } catch (err) { return { id, error: String(err) } }
  }))
  const allSettledMs = performance.now() - t0
  const byStatus: Record<string, number> = {}
  const failures: string[] = submitted.filter((x): x is Error => x instanceof Error).map(e => `not submitted: ${e.name}: ${e.message}`)
  const times: number[] = []
  const phases: Array<{ bids: number, commit: number, provision: number }> = []
  for (const s of settled) {
    if ('error' in s) { byStatus.error = (byStatus.error ?? 0) + 1; failures.push(`${s.id.slice(0, 8)}: status not readable: ${s.error}`); continue }
    const k = s.settled ? s.v.status : 'unsettled'
    byStatus[k] = (byStatus[k] ?? 0) + 1
    if (s.v.status === 'Running') {
      times.push(s.ms)
      phases.push({ bids: phaseAt(s.v, 'Committing'), commit: phaseAt(s.v, 'Provisioning') - phaseAt(s.v, 'Committing'), provision: phaseAt(s.v, 'Running') - phaseAt(s.v, 'Provisioning') })
      if (await providers(s.id) !== 3) failures.push(`${s.id.slice(0, 8)} Running, but on fewer than 3 providers`)
    }
    else failures.push(`${s.id.slice(0, 8)} ${k}${s.settled ? '' : ` (still ${s.v.status} after ${SETTLE_BOUND_MS / 1000} s)`}: ${s.v.reason}`)
  }
  const t1 = performance.now()
  const shut = await Promise.all(ids.map(async id => {
    try { return (await call<DeploymentView>(nodes[0], '/dms/node/deployment/shutdown', { id }, { timeoutMs: 60_000 })).status } catch (err) { return `shutdown failed: ${String(err)}` }
  }))
  const shutdownMs = performance.now() - t1
  // what is left once every shutdown call answered (the call returns when providers reverted)
  const left = await Promise.all(nodes.map(async n => ({ node: n.name, ...await leftovers(n) })))
  const leaked = left.filter(l => l.ledger.length + l.leases.length + l.live.length > 0)
  const r2 = {
    concurrent: CONCURRENT,
    submitMs: round(submitMs),
    statuses: byStatus,
    allSettledMs: round(allSettledMs),
    toRunning: stats(times),
    phases: { bids: stats(phases.map(p => p.bids)), commit: stats(phases.map(p => p.commit)), provision: stats(phases.map(p => p.provision)) },
    failures,
    shutdownMs: round(shutdownMs),
    shutdownNotCompleted: shut.filter(s => s !== 'Completed'),
    leaks: leaked
  }
  log(`  submitted in ${r2.submitMs} ms; settled: ${Object.entries(byStatus).map(([k, v]) => `${v} ${k}`).join(', ')} — all within ${r2.allSettledMs} ms`)
  log(`  each to Running: p50 ${r2.toRunning.p50} ms  p90 ${r2.toRunning.p90} ms  max ${r2.toRunning.max} ms`)
  log(`  on A, p50 / max: bids ${r2.phases.bids.p50} / ${r2.phases.bids.max} ms, commit ${r2.phases.commit.p50} / ${r2.phases.commit.max} ms, allocate+start ${r2.phases.provision.p50} / ${r2.phases.provision.max} ms`)
  for (const why of failures) log(`  FAILED: ${why}`)
  log(`  all shut down in ${r2.shutdownMs} ms${r2.shutdownNotCompleted.length > 0 ? `; NOT Completed: ${r2.shutdownNotCompleted.join('; ')}` : ''}`)
  if (leaked.length === 0) log('  nothing left on any daemon (ledger, port leases, live allocations)')
  for (const l of leaked) log(`  LEFT on ${l.node}: ledger [${l.ledger.join(', ')}] leases [${l.leases.join(', ')}] live [${l.live.join(', ')}]`)
  if (json) process.stdout.write(JSON.stringify({ deploy: r1, concurrent: r2 }) + '\n')
} finally {
  // a daemon's stop leaves its workloads running (the next start adopts them): end ours first
  await Promise.all(nodes.map(async n => {
    try {
      const { allocations } = await call<{ allocations: AllocationView[] }>(n, '/dms/node/allocations/list', {}, { timeoutMs: 5_000 })
      for (const x of allocations.filter(x => x.status === 'running' || x.status === 'starting' || x.status === 'pending')) {
        await call(n, '/dms/node/allocation/stop', { id: x.id, graceMs: 0 }, { timeoutMs: 5_000 }).catch(() => {})
      }
    } catch { /* the daemon may be gone */ }
  }))
  await cleanup(started, dirs)
}
