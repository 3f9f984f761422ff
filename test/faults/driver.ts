/**
 * One side of a fault scenario, in a process of its own (test/faults/): a node made with the
 * library (`createNode`) on a data dir, driven by the test over stdin/stdout, one JSON object a
 * line. The test kills it with SIGKILL and starts it again on the same data dir; nothing it
 * needs survives but what the node wrote there.
 *
 *   node dist/test/faults/driver.js '<config JSON>'      (see DriverConfig; test/faults/setup.ts builds it)
 *
 * Out (stdout): `{"event":"ready", peerId, did, addr}` once listening, then replies
 * `{"id", "ok": …}` | `{"id", "error": {name, message}}` and events `{"event", …}`.
 * In (stdin): `{"id", "cmd", …}`. End of stdin (the test went away) stops the node.
 *
 * Roles:
 *   sender    opens a channel (`open`), sends numbered messages (`send`, `offer`), waits for acks (`whenAcked`)
 *   receiver  handles channel `name`: records each message in its store, in the batch committed with the checkpoint
 *   writer    serves /test/faults/ticks: a stream of ticks; tells when each stream it writes is over, and why
 *   reader    opens the ticks of another node (`read`), consumes them until told to `pause`; tells when its stream is over
 *   `status` (any role): channels, peers, streams, memory.
 */
import '../../src/lib/polyfill.js'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { z } from 'zod'
import { createNode, defineBehavior } from '../../src/index.js'
import type { Channel, ChannelServiceInit } from '../../src/channel/index.js'
import { identityFromRaw } from '../../src/identity/identity.js'
import { DmsError, isDmsError, toWireError } from '../../src/lib/errors.js'
import { createLogger } from '../../src/lib/log.js'
import type { StreamReader, StreamServiceInit } from '../../src/stream/index.js'
import { StreamAccepted, StreamOpen } from '../../src/stream/wire.js'

export interface DriverConfig {
  role: 'sender' | 'receiver' | 'writer' | 'reader'
  /** Data dir; holds `key` (the node's raw Ed25519 key, hex), written by the test. */
  dir: string
  listen: string
  bootstrap?: string[]
  /** The channel a receiver handles. */
  name?: string
  channels?: ChannelServiceInit
  streams?: StreamServiceInit
}

const config = JSON.parse(process.argv[2]) as DriverConfig
const out = (o: Record<string, unknown>): void => { process.stdout.write(JSON.stringify(o) + '\n') }
const since0 = Date.now()
/** An error as the test reads it: a typed one as it travels, anything else by name and message (this is a test's driver: no secrets). */
const wire = (err: unknown): unknown => err instanceof DmsError ? toWireError(err) : { name: err instanceof Error ? err.name : 'Error', message: err instanceof Error ? err.message : String(err) }
const mem = (): Record<string, number> => { const m = process.memoryUsage(); return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers } }

/**
 * A stream source like test/stream/ticks.ts, that also tells the test when each stream it
 * writes is over and why (the writer's signal is the event).
 */
const ticks = defineBehavior({
  path: '/test/faults/ticks',
  capability: false,
  describe: 'test: ticks on a stream, as fast as credit allows or every everyMs',
  request: z.strictObject({ open: StreamOpen, everyMs: z.number().int().min(0).default(0), pad: z.number().int().min(0).max(16_384).default(0) }),
  response: StreamAccepted,
  needs: ['streams'],
  handler: ({ streams }, req, call) => {
    const w = streams.accept(call, req.open)
    out({ event: 'accepted', id: req.open.id })
    w.signal.addEventListener('abort', () => { out({ event: 'over', role: 'writer', id: req.open.id, error: wire(w.signal.reason), chunks: w.chunks }) }, { once: true })
    void (async () => {
      try {
        // bounded by the stream: it ends (the reader, a fault, the stall bound) long before
        for (let n = 1; n < Number.MAX_SAFE_INTEGER && w.state === 'open'; n++) {
          await w.write({ n, pad: 'x'.repeat(req.pad) })
          if (req.everyMs > 0) await new Promise(resolve => setTimeout(resolve, req.everyMs))
        }
      } catch { /* over: the signal said why */ }
    })()
    return { id: req.open.id }
  }
})

const identity = identityFromRaw(Buffer.from((await readFile(join(config.dir, 'key'), 'utf8')).trim(), 'hex'))
const log = createLogger('driver', process.env.DMS_LOG_LEVEL ?? 'warn')
const node = await createNode({
  dataDir: config.dir,
  identity,
  log,
  channels: config.channels,
  streams: config.streams,
  behaviors: config.role === 'writer' ? [ticks] : [],
  config: { listen: [config.listen], mdns: false, helloIntervalMs: 60_000, bootstrap: config.bootstrap ?? [] }
})

if (config.role === 'receiver') {
  const name = z.string().parse(config.name)
  const store = node.channels.store(name)
  // the store holds nothing else; keys in commit order across restarts: this process's start time, then a counter
  const epoch = String(Date.now()).padStart(15, '0')
  let calls = 0
  node.channels.receive(name, (msg, ctx) => {
    calls++
    ctx.batch.put(store, `${epoch}!${String(calls).padStart(9, '0')}`, { seq: ctx.seq, msg })
  })
}

let channel: Channel | undefined
const refusals: unknown[] = []
let reader: StreamReader | undefined
let paused: Promise<void> | undefined
let resume: (() => void) | undefined
/** Chunks the consumer took from the newest stream this reader opened. */
let consumed = 0

async function read (target: string, request: Record<string, unknown>, window: number | undefined): Promise<{ id: string }> {
  // the other node may still be dialling: Unreachable is tried again, a bounded number of times
  for (let i = 0; ; i++) {
    try {
      reader = await node.streams.open(target, '/test/faults/ticks', request, { window, timeoutMs: 5_000 })
      break
    } catch (err) {
      if (!isDmsError(err, 'Unreachable') || i >= 50) throw err
      await new Promise(resolve => setTimeout(resolve, 200))
    }
  }
  const r = reader
  consumed = 0
  let mine = 0
  void (async () => {
    try {
      // bounded by the stream: the test ends it (a fault, the stall bound) long before
      for (let i = 0; i < Number.MAX_SAFE_INTEGER; i++) {
        if (paused !== undefined) await paused
        const n = await r.next()
        if (n.done === true) break
        mine++
        if (reader === r) consumed = mine
        if (mine === 1) out({ event: 'reading', id: r.id })
      }
      out({ event: 'over', role: 'reader', id: r.id, error: null, chunks: mine })
    } catch (err) {
      out({ event: 'over', role: 'reader', id: r.id, error: wire(err), chunks: mine })
    }
  })()
  return { id: r.id }
}

const Cmd = z.discriminatedUnion('cmd', [
  z.object({ cmd: z.literal('open'), to: z.string(), name: z.string(), window: z.number().int().optional(), outboxLimit: z.number().int().optional() }),
  z.object({ cmd: z.literal('send'), from: z.number().int(), count: z.number().int().min(1).max(10_000) }),
  z.object({ cmd: z.literal('offer'), count: z.number().int().min(1), chunk: z.number().int().min(1).max(10_000), pad: z.number().int().min(0).default(0) }),
  z.object({ cmd: z.literal('whenAcked'), seq: z.number().int(), timeoutMs: z.number().int() }),
  z.object({ cmd: z.literal('waitFor'), peer: z.string(), state: z.enum(['connected', 'connecting', 'disconnected']), timeoutMs: z.number().int() }),
  z.object({ cmd: z.literal('read'), target: z.string(), everyMs: z.number().int().default(0), pad: z.number().int().default(0), window: z.number().int().optional() }),
  z.object({ cmd: z.literal('pause') }),
  z.object({ cmd: z.literal('resume') }),
  z.object({ cmd: z.literal('status') }),
  z.object({ cmd: z.literal('gc') }),
  z.object({ cmd: z.literal('stop') })
])

async function run (c: z.infer<typeof Cmd>): Promise<unknown> {
  switch (c.cmd) {
    case 'open':
      channel = node.channels.open(c.to, c.name, { window: c.window, outboxLimit: c.outboxLimit, onRefused: (err, seq) => { refusals.push({ seq, error: err.toWire() }); out({ event: 'refused', seq, error: err.toWire() }) } })
      return { status: channel.status }
    case 'send': {
      const ch = channel
      if (ch === undefined) throw new Error('open a channel first')
      // concurrent: the channel writes them in one batch and numbers them in call order
      const sent = await Promise.all(Array.from({ length: c.count }, async (_, i) => [(await ch.send({ n: c.from + i })).seq, c.from + i]))
      return { sent }
    }
    case 'offer': {
      const ch = channel
      if (ch === undefined) throw new Error('open a channel first')
      const t = performance.now()
      let last = 0
      let peakRss = 0
      const pad = 'x'.repeat(c.pad)
      for (let done = 0; done < c.count; done += c.chunk) {
        const k = Math.min(c.chunk, c.count - done)
        const seqs = await Promise.all(Array.from({ length: k }, async (_, i) => (await ch.send({ n: done + i, pad })).seq))
        last = seqs[seqs.length - 1]
        peakRss = Math.max(peakRss, process.memoryUsage().rss)
      }
      return { last, ms: Math.round(performance.now() - t), peakRss }
    }
    case 'whenAcked': {
      const ch = channel
      if (ch === undefined) throw new Error('open a channel first')
      let timer: NodeJS.Timeout | undefined
      try {
        await Promise.race([ch.whenAcked(c.seq), new Promise((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`seq ${c.seq} not acknowledged within ${c.timeoutMs} ms`)) }, c.timeoutMs) })])
      } finally {
        clearTimeout(timer)
      }
      return { acked: c.seq }
    }
    case 'waitFor':
      await node.channels.waitFor(c.peer, c.state, c.timeoutMs)
      return { state: c.state }
    case 'read':
      return await read(c.target, { everyMs: c.everyMs, pad: c.pad }, c.window)
    case 'pause':
      paused ??= new Promise(resolve => { resume = resolve })
      return { consumed }
    case 'resume':
      resume?.()
      paused = resume = undefined
      return { consumed }
    case 'status':
      return { channels: node.channels.list(), peers: node.channels.peers(), streams: node.streams.list(), streamCount: node.streams.count(), refusals, consumed, mem: mem(), upMs: Date.now() - since0 }
    case 'gc':
      (globalThis as { gc?: () => void }).gc?.()
      return { mem: mem() }
    case 'stop':
      await node.stop()
      setImmediate(() => process.exit(0))
      return {}
  }
}

out({ event: 'ready', peerId: node.peerId, did: node.did, addr: `${config.listen}/p2p/${node.peerId}`, pid: process.pid })
const lines = createInterface({ input: process.stdin })
lines.on('line', line => {
  let id: unknown
  try {
    const raw = JSON.parse(line) as { id?: unknown }
    id = raw.id
    const c = Cmd.parse(raw)
    run(c).then(ok => { out({ id, ok }) }, (err: unknown) => { out({ id, error: wire(err) }) })
  } catch (err) {
    out({ id, error: wire(err) })
  }
})
lines.on('close', () => { void node.stop().finally(() => process.exit(0)) })
