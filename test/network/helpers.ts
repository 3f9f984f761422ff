import { noise } from '@chainsafe/libp2p-noise'
import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { createLibp2p } from 'libp2p'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FrameOrigin, FrameReceiver, GossipVerdict } from '../../src/actor/types.js'
import { newIdentity } from '../../src/identity/identity.js'
import type { Identity } from '../../src/identity/identity.js'
import { silentLogger } from '../../src/lib/log.js'
import { ACTOR_PROTOCOL, createNetwork, type Network, type NetworkInit } from '../../src/network/index.js'
import { openDb, type Db } from '../../src/store/db.js'

export type Received =
  | { kind: 'frame', frame: Uint8Array, origin: FrameOrigin }
  | { kind: 'oversize', head: Uint8Array, totalLength: number, origin: FrameOrigin }

/** A receiver that records what arrives and lets a test await a condition on it, with a deadline. */
export class Inbox implements FrameReceiver {
  readonly items: Received[] = []
  /** Gossip frames the transport asked `validateGossip` about, with the verdict given. */
  readonly validated: Array<{ frame: Uint8Array, origin: FrameOrigin, verdict: GossipVerdict }> = []
  /** Set by a test to judge gossip; absent, the receiver has no gossip validator at all. */
  judge?: (frame: Uint8Array, origin: FrameOrigin) => GossipVerdict
  private readonly waiters = new Set<() => void>()

  get validateGossip (): FrameReceiver['validateGossip'] {
    const judge = this.judge
    if (judge === undefined) return undefined
    return (frame, origin) => {
      const verdict = judge(frame, origin)
      this.validated.push({ frame: new Uint8Array(frame), origin, verdict })
      for (const w of [...this.waiters]) w()
      return verdict
    }
  }

  onFrame (frame: Uint8Array, origin: FrameOrigin): void { this.add({ kind: 'frame', frame: new Uint8Array(frame), origin }) }
  onOversize (head: Uint8Array, totalLength: number, origin: FrameOrigin): void { this.add({ kind: 'oversize', head: new Uint8Array(head), totalLength, origin }) }

  private add (r: Received): void {
    this.items.push(r)
    for (const w of [...this.waiters]) w()
  }

  frames (): Array<Extract<Received, { kind: 'frame' }>> {
    return this.items.filter((r): r is Extract<Received, { kind: 'frame' }> => r.kind === 'frame')
  }

  /** Calls `notify` at each arrival; returns the unsubscribe (for waitFor). */
  subscribe (notify: () => void): () => void {
    this.waiters.add(notify)
    return () => { this.waiters.delete(notify) }
  }

  /** Resolves once `cond()` holds (checked at each arrival), rejects after `ms`. */
  async until (cond: () => boolean, ms: number, what: string): Promise<void> {
    await waitFor(cond, ms, what, (notify) => this.subscribe(notify))
  }
}

/**
 * Resolves once `cond()` holds, re-checking whenever `subscribe`'s notifier fires; rejects after
 * `ms`. Every wait is event-driven and bounded.
 */
export async function waitFor (cond: () => boolean, ms: number, what: string, subscribe: (notify: () => void) => () => void): Promise<void> {
  if (cond()) return
  await new Promise<void>((resolve, reject) => {
    let unsubscribe = (): void => {}
    const timer = setTimeout(() => { unsubscribe(); reject(new Error(`timed out after ${ms} ms waiting for ${what}`)) }, ms)
    unsubscribe = subscribe(() => {
      if (cond()) { clearTimeout(timer); unsubscribe(); resolve() }
    })
  })
}

/** Rejects if `p` has not settled after `ms`. */
export async function within<T> (p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`timed out after ${ms} ms: ${what}`)) }, ms) })])
  } finally {
    clearTimeout(timer)
  }
}

export interface TestNode {
  net: Network
  inbox: Inbox
  identity: Identity
  db: Db
  dir: string
  /** Stops the network and closes the db (the dir stays, for restart tests). */
  stop: () => Promise<void>
}

const cleanups: Array<() => Promise<void>> = []

/** Removes every temp dir and stops every node still running; call in afterAll/afterEach. */
export async function cleanup (): Promise<void> {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {})
}

export async function startNode (init: NetworkInit = {}, opts: { identity?: Identity, dir?: string, beforeStart?: (n: TestNode) => void } = {}): Promise<TestNode> {
  const identity = opts.identity ?? await newIdentity()
  const dir = opts.dir ?? await mkdtemp(join(tmpdir(), 'dms-net-'))
  if (opts.dir === undefined) cleanups.push(async () => { await rm(dir, { recursive: true, force: true }) })
  const db = await openDb(join(dir, 'db'))
  const net = await createNetwork({ listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, ...init }, { identity, db, log: silentLogger() })
  const inbox = new Inbox()
  net.transport.setReceiver(inbox)
  let stopped = false
  const node: TestNode = {
    net,
    inbox,
    identity,
    db,
    dir,
    stop: async () => {
      if (stopped) return
      stopped = true
      await net.stop()
      await db.close()
    }
  }
  opts.beforeStart?.(node)
  try {
    await net.start()
  } catch (err) {
    await db.close()
    throw err
  }
  cleanups.push(node.stop)
  return node
}

/** A frame with recognisable content: `tag` then `size - 4` bytes derived from it. */
export function testFrame (tag: number, size = 64): Uint8Array {
  const f = new Uint8Array(size)
  new DataView(f.buffer).setUint32(0, tag)
  for (let i = 4; i < size; i++) f[i] = (tag + i) & 0xff
  return f
}

export function tagOf (frame: Uint8Array): number {
  return new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(0)
}

export function sameBytes (a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
}

/**
 * A bare libp2p host (TCP + Noise + Yamux, nothing else) that hands every inbound actor stream to
 * `onStream`: a peer that speaks the actor protocol as the test wants (never reads, resets, …).
 */
export async function startBareHost (onStream: (stream: Stream, connection: Connection) => void, opts: { maxReadBufferLength?: number } = {}): Promise<{ host: Libp2p, addr: string, stop: () => Promise<void> }> {
  const muxer = yamux(opts.maxReadBufferLength === undefined ? {} : { streamOptions: { maxReadBufferLength: opts.maxReadBufferLength } })
  const host = await createLibp2p({ addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] }, transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [muxer] })
  await host.handle(ACTOR_PROTOCOL, (stream, connection) => { onStream(stream, connection) })
  let stopped = false
  const stop = async (): Promise<void> => { if (!stopped) { stopped = true; await host.stop() } }
  cleanups.push(stop)
  return { host, addr: host.getMultiaddrs()[0].toString(), stop }
}
