import '../../src/lib/polyfill.js'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createNode, type Node } from '../../src/index.js'
import { newIdentity } from '../../src/identity/identity.js'
import { addRoot } from '../../src/security/index.js'
import { sequential, summarize, throughput } from './measure.js'

/**
 * Channel versus plain invoke between the same two nodes, in the same run, interleaved in slices
 * (issue 8; TESTING.md "Benchmarks are not tests"). Two in-process nodes talking over loopback
 * TCP (libp2p, Noise, Yamux), each with its own level db on disk; the channel's outbox and
 * checkpoints are written with fsync (the default). The receiver's handler writes one record per
 * message in the batch the channel commits with its checkpoint, as a real handler would.
 *
 *   throughput: 64 callers, each `invoke` / `send` + `whenAcked` in a loop (one message in flight each)
 *   stream:     sends without waiting for acks (the window, 256, bounds what is in flight)
 *   latency:    one at a time, p50 of invoke round trip / of send → acknowledged
 */
const SLICES = Number(process.env.SLICES ?? 4)
const SLICE_MS = Number(process.env.SLICE_MS ?? 1_500)
const LAT_N = 300
const STREAM_N = 5_000
// the default per-sender limit (20,000/s) would cap one caller: lifted, as `npm run bench` does
const LIMITS = { perSenderRate: 1_000_000, perSenderBurst: 1_000_000 }

async function main (): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'dms-bench-channel-'))
  const [ia, ib] = await Promise.all([newIdentity(), newIdentity()])
  await addRoot(join(dir, 'b'), 'dms', ia.did)
  const config = { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, helloIntervalMs: 60_000, limits: LIMITS }
  const channels = { syncWrites: process.env.NOSYNC === undefined }
  const b: Node = await createNode({ dataDir: join(dir, 'b'), identity: ib, config, channels })
  const a: Node = await createNode({ dataDir: join(dir, 'a'), identity: ia, channels, config: { ...config, bootstrap: [b.addrs()[0]] } })
  try {
    const store = b.channels.store('bench')
    b.channels.receive('bench', (msg, ctx) => { ctx.batch.put(store, String(ctx.seq).padStart(12, '0'), msg) })
    const ch = a.channels.open(b.did, 'bench')
    const payload = { kind: 'status', allocation: 'ens.web', state: 'running', at: 0 }
    const viaChannel = async (): Promise<void> => { await ch.whenAcked((await ch.send({ ...payload, at: Date.now() })).seq) }
    const viaInvoke = async (): Promise<void> => { await a.invoke(b.did, '/public/hello', {}, { timeout: 10_000 }) }
    // warm both paths (connection, capability cache, JIT)
    for (let i = 0; i < 200; i++) { await viaInvoke(); await viaChannel() }

    const inv: number[] = []
    const chn: number[] = []
    const strm: number[] = []
    const invLat: number[] = []
    const chnLat: number[] = []
    for (let s = 0; s < SLICES; s++) {
      inv.push((await throughput(64, SLICE_MS, viaInvoke)).rps)
      chn.push((await throughput(64, SLICE_MS, viaChannel)).rps)
      const t = performance.now()
      const seqs = await Promise.all(Array.from({ length: STREAM_N }, async () => (await ch.send(payload)).seq))
      await ch.whenAcked(Math.max(...seqs))
      strm.push(Math.round(STREAM_N / ((performance.now() - t) / 1000)))
      invLat.push(...await sequential(LAT_N / SLICES, viaInvoke))
      chnLat.push(...await sequential(LAT_N / SLICES, viaChannel))
    }
    const med = (x: number[]): number => [...x].sort((p, q) => p - q)[Math.floor(x.length / 2)]
    const li = summarize(invLat)
    const lc = summarize(chnLat)
    const out = {
      setup: 'two in-process nodes over loopback TCP (libp2p Noise + Yamux), level on disk, outbox and checkpoints fsynced',
      invokeRps: med(inv),
      channelRps: med(chn),
      channelStreamRps: med(strm),
      ratio64: +(med(chn) / med(inv)).toFixed(2),
      ratioStream: +(med(strm) / med(inv)).toFixed(2),
      invokeP50Us: li.p50Us,
      channelP50Us: lc.p50Us,
      slices: { invoke: inv, channel: chn, stream: strm }
    }
    console.log(JSON.stringify(out, null, 2))
  } finally {
    await a.stop()
    await b.stop()
    await rm(dir, { recursive: true, force: true })
  }
}

await main()
