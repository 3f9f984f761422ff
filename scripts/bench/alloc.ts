import '../../src/lib/polyfill.js'
import { spawn } from 'node:child_process'
import { readFile, readdir, rm } from 'node:fs/promises'
import { callBehavior, openSession } from '../../src/cli/call.js'
import type { CliGlobals } from '../../src/cli/common.js'
import type { AllocateReply, AllocationView } from '../../src/services/provider/index.js'
import { PASSPHRASE, startDaemon, type Daemon } from '../../test/e2e/harness.js'
import setupBuild from '../../test/e2e/global-setup.js'

/**
 * `npm run bench:alloc [-- --quick] [-- --json]`: allocations on a real daemon, through its local
 * API as the CLI makes them (each call signed by the user key and relayed).
 *
 * 1. `alloc run --wait` of `true`: commit → allocate → start → status (waits until completed and
 *    released), interleaved with a bare `child_process.spawn('true')` in this process, the
 *    baseline. Prints p50/p90 of both and the overhead, end to end at the client and on the
 *    daemon (start → completed from the allocation's own transition times). Goal: p50 overhead
 *    ≤ 30 ms.
 * 2. 100 `sleep 600` services at once: time until all run, the daemon's RSS growth per allocation
 *    (after a GC of the daemon is not possible from outside: RSS at rest, before and after),
 *    then all stopped, checking that no process of theirs is left.
 */
const args = new Set(process.argv.slice(2))
const quick = args.has('--quick')
const json = args.has('--json')
const ROUNDS = quick ? 20 : 100
const SERVICES = quick ? 20 : 100

function log (s: string): void { (json ? process.stderr : process.stdout).write(s + '\n') }
const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]
const round1 = (x: number): number => Math.round(x * 10) / 10

async function rssKb (pid: number): Promise<number> {
  return Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN)
}

async function bareSpawn (): Promise<number> {
  const t = performance.now()
  await new Promise<void>((resolve, reject) => {
    const c = spawn('true', [], { stdio: 'ignore' })
    c.on('error', reject)
    c.on('exit', () => { resolve() })
  })
  return performance.now() - t
}

/** Processes whose environment names one of `ids` as their allocation. */
async function processesOf (ids: Set<string>): Promise<number> {
  let n = 0
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue
    const env = await readFile(`/proc/${p}/environ`, 'utf8').catch(() => '')
    const m = /(?:^|\0)DMS_ALLOCATION_ID=([^\0]*)/.exec(env)
    if (m !== null && ids.has(m[1])) n++
  }
  return n
}

setupBuild()
process.env.DMS_PASSPHRASE = PASSPHRASE
let d: Daemon | undefined
try {
  d = await startDaemon({ env: { DMS_LOG_LEVEL: 'info' } })
  const g: CliGlobals = { dataDir: d.dataDir, context: 'user', timeoutMs: 60_000 }
  const s = await openSession(g)
  const call = async <T>(path: string, payload: unknown, to?: AllocationView['handle']): Promise<T> => await callBehavior<T>(g, path, payload, { session: s, to })
  await call('/dms/node/onboarding/onboard', { cpuCores: 2, ramBytes: 4 * 2 ** 30, diskBytes: 2 ** 20, gpus: [] })
  let n = 0
  const deploy = async (spec: Record<string, unknown>): Promise<{ ensembleId: string, handle: AllocationView['handle'] }> => {
    const ensembleId = `bench-${n++}`
    await call('/dms/deployment/commit', { ensembleId, allocations: [{ name: 'main', resources: { cpuCores: 0.01, ramBytes: 2 ** 24 } }] })
    const a = await call<AllocateReply>('/dms/deployment/allocate', { ensembleId, allocations: [{ name: 'main', spec }] })
    return { ensembleId, handle: a.allocations[0].handle }
  }
  /** The four calls' wall time at the client, and the daemon's own time from start to completed (its records). */
  const onDaemon: number[] = []
  const runTrue = async (): Promise<number> => {
    const t = performance.now()
    const { ensembleId, handle } = await deploy({ type: 'task', command: ['true'] })
    await call('/dms/allocation/start', {}, handle)
    const end = await call<AllocationView>('/dms/allocation/status', { wait: true }, handle)
    const ms = performance.now() - t
    if (end.status !== 'completed') throw new Error(`a run of true ended ${end.status}: ${end.reason}`)
    const at = (status: string): number => Date.parse(end.transitions.find(x => x.status === status)?.at ?? '')
    onDaemon.push(at('completed') - at('starting'))
    await call('/dms/deployment/revert', { ensembleId })
    return ms
  }

  // 1. one task, interleaved with the baseline
  for (let i = 0; i < 5; i++) { await runTrue(); await bareSpawn() } // warm-up
  onDaemon.length = 0
  const alloc: number[] = []
  const bare: number[] = []
  for (let i = 0; i < ROUNDS; i++) { alloc.push(await runTrue()); bare.push(await bareSpawn()) }
  const r1 = {
    rounds: ROUNDS,
    allocP50: round1(pct(alloc, 0.5)), allocP90: round1(pct(alloc, 0.9)),
    spawnP50: round1(pct(bare, 0.5)), spawnP90: round1(pct(bare, 0.9)),
    overheadP50: round1(pct(alloc, 0.5) - pct(bare, 0.5)),
    daemonStartToCompletedP50: round1(pct(onDaemon, 0.5)),
    daemonOverheadP50: round1(pct(onDaemon, 0.5) - pct(bare, 0.5))
  }
  log(`alloc run --wait of true (commit → completed, through the API), ${ROUNDS} rounds interleaved:`)
  log(`  allocation   p50 ${r1.allocP50} ms  p90 ${r1.allocP90} ms`)
  log(`  bare spawn   p50 ${r1.spawnP50} ms  p90 ${r1.spawnP90} ms`)
  log(`  overhead p50 ${r1.overheadP50} ms end to end (four signed calls through the API included)`)
  log(`  on the daemon, start → completed (its records, ms resolution): p50 ${r1.daemonStartToCompletedP50} ms, ${r1.daemonOverheadP50} ms over the bare spawn (goal ≤ 30 ms)`)

  // 2. many services at once
  const rssBefore = await rssKb(d.proc.pid as number)
  const t0 = performance.now()
  const services = await Promise.all(Array.from({ length: SERVICES }, async () => await deploy({ type: 'service', command: ['sleep', '600'] })))
  await Promise.all(services.map(async x => await call('/dms/allocation/start', {}, x.handle)))
  const { allocations } = await call<{ allocations: AllocationView[] }>('/dms/node/allocations/list', {})
  const running = allocations.filter(a => a.status === 'running').length
  const allRunningMs = Math.round(performance.now() - t0)
  const rssAfter = await rssKb(d.proc.pid as number)
  const ids = new Set(allocations.map(a => a.id))
  const t1 = performance.now()
  await Promise.all(services.map(async x => await call('/dms/deployment/revert', { ensembleId: x.ensembleId })))
  const stoppedMs = Math.round(performance.now() - t1)
  const left = await processesOf(ids)
  const ledger = await call<{ allocations: unknown[], reservations: unknown[] }>('/dms/node/resources/ledger', {})
  const r2 = {
    services: SERVICES, running, allRunningMs,
    rssBeforeMb: round1(rssBefore / 1024), rssAfterMb: round1(rssAfter / 1024),
    rssPerAllocationKb: Math.round((rssAfter - rssBefore) / SERVICES),
    stoppedMs, processesLeft: left, ledgerLeft: ledger.allocations.length + ledger.reservations.length
  }
  log(`${SERVICES} sleep services: ${running} running after ${allRunningMs} ms; daemon RSS ${r2.rssBeforeMb} → ${r2.rssAfterMb} MB = ${r2.rssPerAllocationKb} KiB per allocation (goal ≤ 1024)`)
  log(`  all reverted in ${stoppedMs} ms; processes left ${left}, ledger entries left ${r2.ledgerLeft}`)
  if (json) process.stdout.write(JSON.stringify({ run: r1, services: r2 }) + '\n')
} finally {
  if (d !== undefined) {
    await d.stop()
    await rm(d.dataDir, { recursive: true, force: true })
  }
}
