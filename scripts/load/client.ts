import '../../src/lib/polyfill.js'
import { noise } from '@chainsafe/libp2p-noise'
import type { Stream } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { randomBytes } from 'node:crypto'
import { createInterface } from 'node:readline'
import { REPLY_PREFIX } from '../../src/actor/constants.js'
import { decodeEnvelope, encodeEnvelope, newNonce } from '../../src/actor/envelope.js'
import { ROOT_INBOX, type Envelope, type Handle } from '../../src/actor/types.js'
import { didFromPeerId } from '../../src/identity/did.js'
import { newIdentity } from '../../src/identity/identity.js'
import { DmsError } from '../../src/lib/errors.js'
import { createLogger } from '../../src/lib/log.js'
import { ACTOR_PROTOCOL } from '../../src/network/constants.js'
import { FrameReader, encodeFrame } from '../../src/network/frame-codec.js'
import { createNode, type Node } from '../../src/node/create-node.js'
import { summarize, type LatencyResult } from '../bench/measure.js'

/**
 * One process of the load test (run.ts). Roles:
 * - `flood`: a dms node keeping `inflight` invokes of `/public/hello` in flight against the daemon;
 * - `garbage`: a bare libp2p host writing garbage on the daemon's actor protocol (undecodable
 *   frames, envelopes that lie about their sender, unknown behaviours, and now and then a broken
 *   length prefix that forces the daemon to drop the stream);
 * - `rotating`: a dms node invoking `/public/hello` with a fresh Ed25519 key per call (signed
 *   envelopes relayed through its node), i.e. evading per-sender limits.
 *
 * It talks to run.ts by JSON lines: commands on stdin (`unloaded`, `load`, `stop`), results on
 * stdout. Every loop is bounded in count and time. Unhandled rejections are NOT caught here: a
 * library promise that rejects unobserved must kill this process, so that the run reports it.
 */

export interface ClientConfig {
  role: 'flood' | 'garbage' | 'rotating'
  name: string
  dataDir: string
  passphrase: string
  daemonPeer: string
  daemonAddr: string
  /** Deadline of each call: a call with no answer by then counts as a timeout (a failure). */
  callTimeoutMs: number
}

export type Command =
  | { cmd: 'unloaded', calls: number }
  | { cmd: 'load', seconds: number, inflight: number }
  | { cmd: 'stop' }

/** Outcome counts of a phase: `ok`, then each typed error by name (Timeout among them). */
export interface LoadReport {
  calls: number
  ok: number
  errors: Record<string, number>
  latency: LatencyResult
  /** garbage role only */
  garbage?: { framesSent: number, replies: Record<string, number>, streamsDropped: number, reopenFailures: number }
}

const cfg = JSON.parse(process.env.LOAD_CONFIG ?? '{}') as ClientConfig
const BEHAVIOR = '/public/hello'
/** A warm-up call that gets no answer in this long is retried. */
const WARM_UP_CALL_TIMEOUT_MS = 5_000
/** A call loop stops after this many calls even if the clock says otherwise (every loop bounded). */
const MAX_CALLS_PER_WORKER = 10_000_000

/** The node's warnings go to stderr, whose tail run.ts shows when a client fails. */
const log = createLogger(`load-${cfg.name}`, process.env.LOAD_CLIENT_LOG_LEVEL ?? 'warn')

function out (v: unknown): void { process.stdout.write(JSON.stringify(v) + '\n') }

function errorName (err: unknown): string {
  if (err instanceof DmsError) return err.name
  // not a typed error: a defect of the library (every failure must be typed)
  return `untyped:${err instanceof Error ? err.name : typeof err}`
}

/** Runs `call` with `inflight` callers until `seconds` have passed; counts outcomes and latencies. */
async function drive (inflight: number, seconds: number, call: () => Promise<unknown>, maxCalls = MAX_CALLS_PER_WORKER): Promise<LoadReport> {
  const end = performance.now() + seconds * 1000
  const lat: number[] = []
  const errors: Record<string, number> = {}
  let ok = 0
  const worker = async (): Promise<void> => {
    for (let i = 0; i < maxCalls && performance.now() < end; i++) {
      const t = performance.now()
      try {
        await call()
        ok++
        lat.push((performance.now() - t) * 1000)
      } catch (err) {
        const n = errorName(err)
        errors[n] = (errors[n] ?? 0) + 1
      }
    }
  }
  await Promise.all(Array.from({ length: inflight }, worker))
  const calls = ok + Object.values(errors).reduce((a, b) => a + b, 0)
  return { calls, ok, errors, latency: summarize(lat) }
}

// ---------------------------------------------------------------- roles

interface Role { run: (c: Command) => Promise<unknown>, stop: () => Promise<void>, peerId: string }

async function floodRole (): Promise<Role> {
  const node = await createNode({ dataDir: cfg.dataDir, passphrase: cfg.passphrase, config: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, bootstrap: [cfg.daemonAddr] }, log })
  const call = async (timeout = cfg.callTimeoutMs): Promise<unknown> => await node.invoke(cfg.daemonPeer, BEHAVIOR, {}, { timeout })
  await warmUp(async () => await call(WARM_UP_CALL_TIMEOUT_MS))
  return {
    run: async (c) => {
      if (c.cmd === 'unloaded') return await drive(1, 120, call, c.calls)
      if (c.cmd === 'load') return await drive(c.inflight, c.seconds, call)
      return undefined
    },
    stop: async () => { await node.stop() },
    peerId: node.peerId
  }
}

async function rotatingRole (): Promise<Role> {
  const node: Node = await createNode({ dataDir: cfg.dataDir, passphrase: cfg.passphrase, config: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, bootstrap: [cfg.daemonAddr] }, log })
  const daemonDid = didFromPeerId(cfg.daemonPeer)
  const to: Handle = { id: daemonDid, did: daemonDid, addr: { peer: cfg.daemonPeer, inbox: ROOT_INBOX } }
  // A new key per call: the envelope is signed by it, and relayed through this node (as the API
  // relays a CLI's envelope), so the daemon sees a new sender on every call.
  const call = async (timeout = cfg.callTimeoutMs): Promise<unknown> => {
    const id = await newIdentity()
    const nonce = newNonce()
    const env: Envelope = { v: 1, to, from: { id: id.did, did: id.did, addr: { peer: node.peerId, inbox: ROOT_INBOX } }, be: BEHAVIOR, nonce, exp: Date.now() + timeout, cont: `${REPLY_PREFIX}${nonce}`, msg: {} }
    const r = await node.relay(encodeEnvelope(env, id.sign), 'invoke')
    if (r !== undefined && 'error' in r.reply) throw Object.assign(new DmsError(r.reply.error.message, String(r.reply.error.code)), { name: r.reply.error.name })
    return r
  }
  await warmUp(async () => await call(WARM_UP_CALL_TIMEOUT_MS))
  return {
    run: async (c) => {
      if (c.cmd === 'load') return await drive(c.inflight, c.seconds, call)
      return undefined
    },
    stop: async () => { await node.stop() },
    peerId: node.peerId
  }
}

/**
 * Garbage on the actor protocol, in rotation: random bytes (undecodable: no reply is possible),
 * an unsigned envelope claiming another sender (Unauthorized), an envelope to an unknown
 * behaviour (UnknownBehavior), and every GARBAGE_BREAK_EVERY frames a length prefix no varint
 * decoder accepts, after which the daemon must drop the stream (and we open another).
 */
const GARBAGE_BREAK_EVERY = 500
/**
 * The first break comes sooner: the short CI form runs for 3 s, in which a loaded 2-core machine
 * may let this process write fewer than GARBAGE_BREAK_EVERY frames (seen: the run then reported
 * no dropped stream).
 */
const GARBAGE_FIRST_BREAK = 100
/** Frames written before waiting for the stream to drain and the event loop to turn. */
const GARBAGE_BATCH = 50

async function garbageRole (): Promise<Role> {
  const host = await createLibp2p({ addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] }, transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [yamux()] })
  const self = host.peerId.toString()
  const selfDid = didFromPeerId(self)
  const daemonDid = didFromPeerId(cfg.daemonPeer)
  const stranger = await newIdentity()
  const replies: Record<string, number> = {}
  let streamsDropped = 0
  let reopenFailures = 0
  let framesSent = 0

  const open = async (): Promise<Stream> => {
    const s = await host.dialProtocol(multiaddr(cfg.daemonAddr), ACTOR_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    const reader = new FrameReader(4 * 1024 * 1024, 64)
    s.addEventListener('message', (evt) => {
      for (const piece of (evt.data instanceof Uint8Array ? [evt.data] : evt.data)) {
        for (const ev of reader.push(piece)) {
          if (ev.type !== 'frame') continue
          let name = 'undecodable'
          try {
            const msg = decodeEnvelope(ev.frame).envelope.msg as { ok?: unknown, error?: { name?: string } }
            name = msg.error?.name ?? ('ok' in msg ? 'ok' : 'other')
          } catch { /* counted as undecodable */ }
          replies[name] = (replies[name] ?? 0) + 1
        }
      }
    })
    return s
  }

  const frameOf = (i: number): Uint8Array => {
    const kind = i % 3
    if (kind === 0) return randomBytes(64 + (i % 200))
    const nonce = newNonce()
    const base = { v: 1 as const, to: { id: daemonDid, did: daemonDid, addr: { peer: cfg.daemonPeer, inbox: ROOT_INBOX } }, nonce, exp: Date.now() + 10_000, cont: `${REPLY_PREFIX}${nonce}`, msg: {} }
    if (kind === 1) {
      // claims a sender that is not the connected host, unsigned
      return encodeEnvelope({ ...base, from: { id: stranger.did, did: stranger.did, addr: { peer: self, inbox: ROOT_INBOX } }, be: BEHAVIOR })
    }
    return encodeEnvelope({ ...base, from: { id: selfDid, did: selfDid, addr: { peer: self, inbox: ROOT_INBOX } }, be: '/no/such/behaviour' })
  }

  // The daemon refuses more than a few new connections per second from one address (libp2p's
  // inboundConnectionThreshold), and every client here shares 127.0.0.1: retry, bounded.
  const firstOpen = async (): Promise<Stream> => {
    for (let i = 0; ; i++) {
      try { return await open() } catch (err) { if (i >= 49) throw err; await new Promise(resolve => setTimeout(resolve, 200)) }
    }
  }
  let stream = await firstOpen()
  const load = async (seconds: number): Promise<LoadReport> => {
    const end = performance.now() + seconds * 1000
    for (let i = 0; i < MAX_CALLS_PER_WORKER && performance.now() < end; i++) {
      if (i === GARBAGE_FIRST_BREAK || (i > 0 && i % GARBAGE_BREAK_EVERY === 0)) {
        // 10 continuation bytes: more than any varint the daemon accepts
        stream.send(new Uint8Array(10).fill(0xff))
        framesSent++
        await new Promise<void>(resolve => { if (stream.status !== 'open') resolve(); else stream.addEventListener('close', () => { resolve() }, { once: true }) })
        streamsDropped++
        try { stream = await open() } catch { reopenFailures++; break }
        continue
      }
      let accepted = true
      try { accepted = stream.send(encodeFrame(frameOf(i))) } catch { break }
      framesSent++
      if (!accepted) await stream.onDrain().catch(() => {})
      if (i % GARBAGE_BATCH === 0) await new Promise(resolve => setImmediate(resolve))
    }
    return { calls: framesSent, ok: 0, errors: {}, latency: summarize([]), garbage: { framesSent, replies, streamsDropped, reopenFailures } }
  }
  return {
    run: async (c) => c.cmd === 'load' ? await load(c.seconds) : undefined,
    stop: async () => { await host.stop() },
    peerId: self
  }
}

/**
 * The first call may race the bootstrap dial, and the daemon refuses more than a few new
 * connections per second from one address (libp2p's inboundConnectionThreshold; every client
 * here is 127.0.0.1): retry for a bounded time, then give up loudly.
 */
async function warmUp (call: () => Promise<unknown>): Promise<void> {
  let last: unknown
  for (let i = 0; i < 120; i++) {
    try { await call(); return } catch (err) { last = err; await new Promise(resolve => setTimeout(resolve, 500)) }
  }
  throw new Error(`${cfg.name}: the daemon never answered: ${String(last)}`)
}

// ---------------------------------------------------------------- main

const role = cfg.role === 'flood' ? await floodRole() : cfg.role === 'rotating' ? await rotatingRole() : await garbageRole()
out({ type: 'ready', name: cfg.name, peerId: role.peerId })
const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  const c = JSON.parse(line) as Command
  if (c.cmd === 'stop') break
  out({ type: c.cmd, name: cfg.name, report: await role.run(c) })
}
await role.stop()
process.exit(0)
