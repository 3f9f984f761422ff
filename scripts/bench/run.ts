import '../../src/lib/polyfill.js'
import { spawn, type ChildProcess } from 'node:child_process'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import { PASSPHRASE, ROOT, dms, dmsJson, startDaemon, tempDir, type Daemon } from '../../test/e2e/harness.js'
import setupBuild from '../../test/e2e/global-setup.js'
import { benchCaps } from './caps.js'

/**
 * `npm run bench [-- --json] [-- --quick] [-- --sign-all]`
 *
 * Two daemons' worth of processes: a `dms run` daemon (server) and a client process running a dms
 * node, plus a bare libp2p echo server as the floor. The client measures, interleaved in the same
 * run: sequential round trips (warm-up, then timed: p50, p99) and throughput with 64 in flight, of
 * `/public/hello`, of `/dms/node/peers/self` authorized by a UCAN chain, and of the floor. Also the
 * server's time to ready and idle RSS. Targets: invoke p50 ≤ 1.5× floor, throughput ≥ 0.5× floor,
 * ready ≤ 1.5 s, idle RSS ≤ 120 MB. Prints ratios; `--json` prints one JSON object last.
 * `--sign-all` runs both nodes with `signAllEnvelopes` (every envelope signed, as before nodes'
 * own envelopes travelled host-authenticated), to measure what signing costs.
 */
const args = new Set(process.argv.slice(2))
const quick = args.has('--quick')
const json = args.has('--json')
const signAll = args.has('--sign-all')
const CFG = quick
  ? { warmup: 300, timed: 400, tputMs: 2_000 }
  : { warmup: 3_000, timed: 2_000, tputMs: 8_000 }
const CONCURRENCY = 64
const FRAME_BYTES = 600 // about the size of an invoke envelope
const BENCH_SENDER_RATE = 1_000_000

function log (s: string): void { if (!json) process.stdout.write(s + '\n'); else process.stderr.write(s + '\n') }

async function firstJsonLine<T> (proc: ChildProcess, timeoutMs: number): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error('benchmark worker timed out')) }, timeoutMs)
    createInterface({ input: proc.stdout! }).on('line', line => {
      try { const v = JSON.parse(line) as T; clearTimeout(timer); resolve(v) } catch { /* not ours */ }
    })
    proc.on('exit', code => { clearTimeout(timer); reject(new Error(`benchmark worker exited with ${code}`)) })
  })
}

async function rssMb (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN)
  return Math.round(kb / 1024)
}

// The daemon must run from dist/, as installed: bin/dms.js falls back to the TypeScript sources
// (slower to start, ~50 MB more memory) when they are newer than the build.
setupBuild()

const worker = join(ROOT, 'scripts/bench/worker.ts')
const tsx = join(ROOT, 'node_modules/.bin/tsx')
const serverDir = await tempDir('dms-bench-s-')
const clientDir = await tempDir('dms-bench-c-')
let server: Daemon | undefined
let echo: ChildProcess | undefined
try {
  // The client node is authorized by a token from the server's user, as a foreign node would be.
  await dmsJson(['init', '--data-dir', serverDir])
  await dmsJson(['init', '--data-dir', clientDir])
  const clientDid = (await dms(['key', 'did', '--context', 'dms', '--data-dir', clientDir])).stdout.trim()
  const grant = await dms(['cap', 'grant', clientDid, '--cap', '/dms/node/peers', '--duration', '2h', '--token-only', '--data-dir', serverDir])
  if (grant.code !== 0) throw new Error(`cap grant failed: ${grant.stderr}`)
  const token = grant.stdout.trim()
  const anchor = await dms(['cap', 'anchor', '--provide', token, '--context', 'dms', '--data-dir', clientDir])
  if (anchor.code !== 0) throw new Error(`cap anchor failed: ${anchor.stderr}`)

  // The per-sender limit (default 20,000/s) would cap one client's throughput: the benchmark
  // measures the transport and dispatcher, so the server lifts it (and says so).
  await writeFile(join(serverDir, 'config.json'), JSON.stringify({ limits: { perSenderRate: BENCH_SENDER_RATE, perSenderBurst: BENCH_SENDER_RATE } }))
  log(`server per-sender limit raised to ${BENCH_SENDER_RATE.toLocaleString('en')}/s for the measurement`)
  const t0 = performance.now()
  server = await startDaemon({ dataDir: serverDir, env: { DMS_LOG_LEVEL: 'info', DMS_SIGN_ALL_ENVELOPES: String(signAll) } })
  const readyMs = Math.round(performance.now() - t0)
  const readyLog = server.logs.find(l => l.msg === 'dms node ready')
  log(`server daemon ready in ${readyMs} ms from spawn (${String(readyLog?.readyMs)} ms after its modules loaded)`)

  echo = spawn(tsx, [worker, 'echo'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] })
  const { addr: echoAddr } = await firstJsonLine<{ addr: string }>(echo, 30_000)

  // idle: after start-up work settled (a benchmark may wait; tests may not)
  await new Promise(resolve => setTimeout(resolve, 3_000))
  const idleRssMb = await rssMb(server.info.pid)
  log(`server idle RSS ${idleRssMb} MB`)

  if (signAll) log('every envelope signed (--sign-all)')
  log(`measuring: ${CFG.warmup} warm-up + ${CFG.timed} timed sequential calls, then ${CONCURRENCY} in flight for ${CFG.tputMs / 1000} s, per kind, interleaved…`)
  const client = spawn(tsx, [worker, 'client'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
    env: {
      ...process.env,
      BENCH_CONFIG: JSON.stringify({
        dataDir: clientDir, passphrase: PASSPHRASE, serverPeer: server.info.peerId, serverAddr: server.info.addrs[0], echoAddr,
        ...CFG, concurrency: CONCURRENCY, frameBytes: FRAME_BYTES, signAll
      })
    }
  })
  type K = { p50Us: number, p99Us: number, rps: number, errors: number }
  const r = await firstJsonLine<{ floor: K, invoke: K, authorized: K }>(client, 10 * 60_000)
  // capability verification, in this process once the transport measurements are done
  log('measuring capability chains: cold verification at depth 1, 2, 4 and cached authorizations…')
  const caps = await benchCaps({ durationMs: quick ? 500 : 2_000 })
  const ratio = (a: number, b: number): number => Math.round((a / b) * 100) / 100
  const result = {
    invoke: { p50Us: r.invoke.p50Us, p99Us: r.invoke.p99Us, rps: r.invoke.rps },
    authorized: { p50Us: r.authorized.p50Us, p99Us: r.authorized.p99Us, rps: r.authorized.rps },
    floor: { p50Us: r.floor.p50Us, p99Us: r.floor.p99Us, rps: r.floor.rps },
    ratios: { p50: ratio(r.invoke.p50Us, r.floor.p50Us), rps: ratio(r.invoke.rps, r.floor.rps), authorizedP50: ratio(r.authorized.p50Us, r.floor.p50Us), authorizedRps: ratio(r.authorized.rps, r.floor.rps) },
    daemon: { readyMs, idleRssMb },
    signAllEnvelopes: signAll,
    caps,
    errors: { invoke: r.invoke.errors, authorized: r.authorized.errors, floor: r.floor.errors }
  }
  const row = (name: string, k: K): string => `${name.padEnd(28)} p50 ${String(k.p50Us).padStart(6)} µs   p99 ${String(k.p99Us).padStart(6)} µs   ${String(k.rps).padStart(7)} req/s${k.errors > 0 ? `   (${k.errors} calls failed)` : ''}`
  log('')
  log(row('floor (bare libp2p echo)', r.floor))
  log(row('/public/hello', r.invoke))
  log(row('/dms/node/peers/self (UCAN)', r.authorized))
  log('')
  log(`invoke p50 ${result.ratios.p50}× floor (target ≤ 1.5)   throughput ${result.ratios.rps}× floor (target ≥ 0.5)`)
  log(`authorized p50 ${result.ratios.authorizedP50}× floor   throughput ${result.ratios.authorizedRps}× floor`)
  log(`daemon ready ${readyMs} ms (target ≤ 1500)   idle RSS ${idleRssMb} MB (target ≤ 120)`)
  log(`capabilities: ${JSON.stringify(caps)} (targets: cached ≥ 50,000/s, cold depth-2 ≥ 1,000/s)`)
  if (json) process.stdout.write(JSON.stringify(result) + '\n')
} finally {
  echo?.kill('SIGTERM')
  if (server !== undefined) await server.stop()
  await rm(serverDir, { recursive: true, force: true })
  await rm(clientDir, { recursive: true, force: true })
}
