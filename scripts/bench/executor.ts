import '../../src/lib/polyfill.js'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { silentLogger } from '../../src/lib/log.js'
import { createAllocationRuntime, isTerminal, type AllocationRecord } from '../../src/services/allocations/index.js'
import { createProcessExecutor } from '../../src/services/executors/process.js'
import { openDb } from '../../src/store/db.js'

/**
 * `npm run bench:executor [-- --json] [-- --quick] [-- --services N]`
 *
 * 1. Start → exit of `true`, interleaved in one run (the order rotates each round):
 *    - bare: `child_process.spawn('true')` until its 'exit' (the floor);
 *    - executor: the process executor's `start` + `wait` (wrapper shell, registry entry, cgroups
 *      where the node can make them, log files by fd);
 *    - runtime: the allocation runtime's `create` + `run` of a task until it is `completed`
 *      (records in a level db, each transition written first; fsync off, as a node with
 *      `syncWrites` off), i.e. what a commit adds on the node below the actor layer.
 *    p50 and p90 of each, the p50 overheads over bare in ms and the ratios.
 * 2. N concurrent `sleep` services through the runtime (default 100): all running, the daemon's
 *    RSS growth per allocation (after a GC, when run with --expose-gc as the npm script does),
 *    then all stopped, and a check that nothing is left (executor list, processes).
 */
const args = process.argv.slice(2)
const json = args.includes('--json')
const quick = args.includes('--quick')
const ROUNDS = quick ? 30 : 150
const WARMUP = 5
const si = args.indexOf('--services')
const SERVICES = si >= 0 ? Number(args[si + 1]) : quick ? 20 : 100
/** Every wait of the benchmark is bounded. */
const LONG = 60_000

function log (s: string): void { (json ? process.stderr : process.stdout).write(s + '\n') }
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] * 100) / 100
}
const round2 = (x: number): number => Math.round(x * 100) / 100
const gc = (globalThis as { gc?: () => void }).gc
const rss = (): number => { gc?.(); gc?.(); return process.memoryUsage().rss }

const root = await mkdtemp(join(tmpdir(), 'dms-bench-executor-'))
const nodeId = `bench-${randomBytes(4).toString('hex')}`
const executor = createProcessExecutor({ nodeId, stateDir: join(root, 'state') }, { log: silentLogger() })
const db = await openDb(join(root, 'db'))
const ended: string[] = []
const runtime = createAllocationRuntime({ dir: join(root, 'allocations'), syncWrites: false }, {
  db, log: silentLogger(), executors: { process: executor }, onEnded: (r) => { ended.push(r.id) }
})
await runtime.start()

async function bare (): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const c = spawn('true', [], { stdio: 'ignore' })
    c.once('error', reject)
    c.once('exit', () => resolve())
  })
}

let seq = 0
async function viaExecutor (): Promise<() => Promise<void>> {
  const dir = join(root, 'ex', String(++seq))
  await mkdir(dir, { recursive: true })
  const t0 = performance.now()
  const ref = await executor.start({
    allocationId: `ex-${seq}`, command: ['true'], env: { PATH: '/usr/bin:/bin' }, limits: { cpuCores: 0.5, ramBytes: 64 * 2 ** 20 },
    ports: [], dir, stdoutPath: join(dir, 'stdout.log'), stderrPath: join(dir, 'stderr.log')
  })
  await executor.wait(ref, { signal: AbortSignal.timeout(LONG) })
  const ms = performance.now() - t0
  await executor.remove(ref)
  return async () => { times.executor.push(ms) }
}

async function until (id: string, done: (r: AllocationRecord | undefined) => boolean): Promise<AllocationRecord> {
  if (done(runtime.get(id))) return runtime.get(id) as AllocationRecord
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`${id} did not end within ${LONG} ms`)) }, LONG)
    const off = runtime.onChange((r) => { if (r.id === id && done(r)) { clearTimeout(timer); off(); resolve(r) } })
  })
}

async function viaRuntime (): Promise<number> {
  const id = `rt-${++seq}`
  const t0 = performance.now()
  await runtime.create(id, { type: 'task', command: ['true'], resources: { cpuCores: 0.5, ramBytes: 64 * 2 ** 20 } })
  await runtime.run(id)
  const r = await until(id, x => x !== undefined && isTerminal(x.status))
  const ms = performance.now() - t0
  if (r.status !== 'completed') throw new Error(`${id} ended ${r.status}: ${r.reason}`)
  // Untimed: its clean-up and release, then it is forgotten.
  await until(id, x => x?.released === true)
  await runtime.removeAllocation(id)
  return ms
}

const times = { bare: [] as number[], executor: [] as number[], runtime: [] as number[] }
const ORDERS = [['bare', 'executor', 'runtime'], ['executor', 'runtime', 'bare'], ['runtime', 'bare', 'executor']] as const
let leftover = 0
try {
  const limits = (await executor.probe())
  log(`process executor: ${limits.available ? limits.detail : limits.reason}`)
  log(`1. start → exit of \`true\`: ${WARMUP} warm-up + ${ROUNDS} timed rounds, bare spawn, executor and runtime interleaved`)
  for (let i = 0; i < WARMUP + ROUNDS; i++) {
    for (const which of ORDERS[i % ORDERS.length]) {
      if (which === 'bare') {
        const t0 = performance.now()
        await bare()
        if (i >= WARMUP) times.bare.push(performance.now() - t0)
      } else if (which === 'executor') {
        const record = await viaExecutor()
        if (i >= WARMUP) await record()
      } else {
        const ms = await viaRuntime()
        if (i >= WARMUP) times.runtime.push(ms)
      }
    }
  }
  const p50 = { bare: pct(times.bare, 50), executor: pct(times.executor, 50), runtime: pct(times.runtime, 50) }
  log(`   bare spawn        p50 ${p50.bare} ms   p90 ${pct(times.bare, 90)} ms`)
  log(`   executor          p50 ${p50.executor} ms   p90 ${pct(times.executor, 90)} ms   overhead ${round2(p50.executor - p50.bare)} ms, ${round2(p50.executor / p50.bare)}×`)
  log(`   runtime (task)    p50 ${p50.runtime} ms   p90 ${pct(times.runtime, 90)} ms   overhead ${round2(p50.runtime - p50.bare)} ms, ${round2(p50.runtime / p50.bare)}×`)

  log(`2. ${SERVICES} concurrent \`sleep\` services through the runtime${gc === undefined ? ' (no --expose-gc: RSS without a GC, noisier)' : ''}`)
  const rss0 = rss()
  const t0 = performance.now()
  const ids = Array.from({ length: SERVICES }, (_, i) => `svc-${i}`)
  await Promise.all(ids.map(async (id) => {
    await runtime.create(id, { type: 'service', command: ['sleep', '600'], resources: { cpuCores: 0.01, ramBytes: 16 * 2 ** 20 } })
    await runtime.run(id)
  }))
  const startMs = performance.now() - t0
  const running = runtime.list().filter(r => r.status === 'running' && ids.includes(r.id)).length
  const rss1 = rss()
  const t1 = performance.now()
  await Promise.all(ids.map(async id => await runtime.stopAllocation(id, { graceMs: 5_000 })))
  const stopMs = performance.now() - t1
  leftover = (await executor.list()).length
  const growthPerAlloc = (rss1 - rss0) / SERVICES
  log(`   all ${running}/${SERVICES} running after ${Math.round(startMs)} ms; RSS ${Math.round(rss0 / 2 ** 20)} → ${Math.round(rss1 / 2 ** 20)} MiB: ${round2(growthPerAlloc / 1024)} KiB per allocation`)
  log(`   all stopped in ${Math.round(stopMs)} ms; left in the executor: ${leftover}`)
  if (json) {
    process.stdout.write(JSON.stringify({
      rounds: ROUNDS,
      bare: { p50Ms: p50.bare, p90Ms: pct(times.bare, 90) },
      executor: { p50Ms: p50.executor, p90Ms: pct(times.executor, 90), overheadP50Ms: round2(p50.executor - p50.bare), ratioP50: round2(p50.executor / p50.bare) },
      runtime: { p50Ms: p50.runtime, p90Ms: pct(times.runtime, 90), overheadP50Ms: round2(p50.runtime - p50.bare), ratioP50: round2(p50.runtime / p50.bare) },
      services: { count: SERVICES, running, startMs: Math.round(startMs), rssGrowthPerAllocationBytes: Math.round(growthPerAlloc), stopMs: Math.round(stopMs), leftover, gc: gc !== undefined }
    }) + '\n')
  }
} finally {
  await runtime.stop()
  for (const ref of await executor.list()) { await executor.stop(ref, 0).catch(() => {}); await executor.remove(ref).catch(() => {}) }
  await executor.close()
  await db.close()
  await rm(root, { recursive: true, force: true })
}
if (leftover > 0) process.exitCode = 1
