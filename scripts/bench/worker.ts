import '../../src/lib/polyfill.js'
import { createNode } from '../../src/node/create-node.js'
import { echoClient, startEchoServer } from './floor.js'
import { sequential, summarize, throughput, type LatencyResult, type ThroughputResult } from './measure.js'

/**
 * Processes of the benchmark (see run.ts): `echo` serves the floor; `client` runs a dms node that
 * invokes the server daemon, and the floor client, interleaved, and prints one JSON result line.
 */
interface ClientConfig {
  dataDir: string
  passphrase: string
  serverPeer: string
  serverAddr: string
  echoAddr: string
  warmup: number
  timed: number
  tputMs: number
  concurrency: number
  frameBytes: number
  signAll: boolean
}

const role = process.argv[2]

if (role === 'echo') {
  const server = await startEchoServer()
  process.stdout.write(JSON.stringify({ addr: server.addr }) + '\n')
  process.on('SIGTERM', () => { void server.stop().then(() => process.exit(0)) })
} else if (role === 'client') {
  const cfg = JSON.parse(process.env.BENCH_CONFIG ?? '{}') as ClientConfig
  const node = await createNode({ dataDir: cfg.dataDir, passphrase: cfg.passphrase, config: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, bootstrap: [cfg.serverAddr], signAllEnvelopes: cfg.signAll } })
  const floor = await echoClient(cfg.echoAddr, cfg.frameBytes)
  const calls: Record<'floor' | 'invoke' | 'authorized', () => Promise<unknown>> = {
    floor: floor.call,
    invoke: async () => await node.invoke(cfg.serverPeer, '/public/hello', {}, { timeout: 10_000 }),
    authorized: async () => await node.invoke(cfg.serverPeer, '/dms/node/peers/self', {}, { timeout: 10_000 })
  }
  // fail early and clearly if the authorized call is refused
  await calls.authorized()
  const kinds = ['floor', 'invoke', 'authorized'] as const
  for (const k of kinds) await sequential(cfg.warmup, calls[k])
  // interleave: each kind's timed samples are taken in slices, alternating kinds, so that noise
  // on the shared machine falls on all of them alike. Latency: 20 slices of 100 calls (~15-50 ms
  // each; this VM's slow spells last a few hundred ms, so coarser slices let one land on a single
  // kind). Throughput: 4 slices of a quarter of the time each.
  const lat: Record<string, number[]> = { floor: [], invoke: [], authorized: [] }
  const latSlices = 20
  for (let s = 0; s < latSlices; s++) for (const k of kinds) lat[k].push(...await sequential(Math.ceil(cfg.timed / latSlices), calls[k]))
  const tput: Record<string, ThroughputResult[]> = { floor: [], invoke: [], authorized: [] }
  const tputSlices = 4
  for (let s = 0; s < tputSlices; s++) for (const k of kinds) tput[k].push(await throughput(cfg.concurrency, cfg.tputMs / tputSlices, calls[k]))
  const out: Record<string, LatencyResult & { rps: number, errors: number }> = {}
  for (const k of kinds) {
    const n = tput[k].reduce((a, r) => a + r.n, 0)
    out[k] = { ...summarize(lat[k]), rps: Math.round(n / (cfg.tputMs / 1000)), errors: tput[k].reduce((a, r) => a + r.errors, 0) }
  }
  process.stdout.write(JSON.stringify(out) + '\n')
  await floor.stop()
  await node.stop()
  process.exit(0)
} else {
  process.stderr.write('usage: worker.ts echo|client\n')
  process.exit(2)
}
