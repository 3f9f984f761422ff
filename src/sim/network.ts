import { createHash } from 'node:crypto'
import type { FrameReceiver, Transport } from '../actor/types.js'
import { FrameTooLarge, Unreachable } from '../lib/errors.js'
import type { SubscriptionEvents } from '../network/hello.js'
import type { VirtualClock } from './clock.js'

export interface SimNetOptions {
  /** One-way latency of a frame: `latencyMs` plus a uniform jitter in [0, jitterMs). */
  latencyMs: number
  jitterMs: number
  /** Probability that a frame (direct or one gossip hop) is lost. */
  loss: number
  /** Gossip mesh links each node makes when it joins (gossipsub's D is 6; links go both ways). */
  meshLinks: number
  /** A send to an unreachable peer fails after this long (a dial timing out). */
  unreachableAfterMs: number
  /** How long a gossip message id is remembered, to drop duplicates (gossipsub's seenTTL). */
  seenTtlMs: number
  maxFrameBytes: number
}

export const DEFAULT_SIM_NET: SimNetOptions = {
  latencyMs: 20,
  jitterMs: 30,
  loss: 0,
  meshLinks: 4,
  unreachableAfterMs: 1_000,
  seenTtlMs: 120_000,
  maxFrameBytes: 4 * 1024 * 1024
}

/** Per node traffic counters: every frame and every gossip hop, duplicates included. */
export interface Traffic {
  sent: number
  received: number
  bytesSent: number
  bytesReceived: number
}

type SubListener = (evt: CustomEvent<{ peerId: { toString: () => string }, subscriptions: Array<{ topic: string, subscribe: boolean }> }>) => void

/** One simulated host: its actor Transport and the pubsub events the hello announcer listens to. */
export class SimEndpoint implements Transport, SubscriptionEvents {
  receiver?: FrameReceiver
  readonly topics = new Set<string>()
  readonly traffic: Traffic = { sent: 0, received: 0, bytesSent: 0, bytesReceived: 0 }
  /** Gossip mesh neighbours (indices into the network). */
  readonly mesh = new Set<number>()
  private readonly subListeners = new Set<SubListener>()
  alive = true
  /** Partition group: frames cross only between endpoints of the same group. */
  group = 0

  constructor (private readonly net: SimNetwork, readonly index: number, readonly peerId: string) {}

  get maxFrameBytes (): number { return this.net.opts.maxFrameBytes }
  setReceiver (receiver: FrameReceiver): void { this.receiver = receiver }
  peerIdOf (index: number): string { return this.net.endpoints[index].peerId }

  async send (peer: string, frame: Uint8Array): Promise<void> {
    await this.net.send(this, peer, frame)
  }

  async publish (topic: string, frame: Uint8Array): Promise<void> {
    this.net.publish(this, topic, frame)
  }

  subscribe (topic: string): void {
    if (this.topics.has(topic)) return
    this.topics.add(topic)
    this.net.subscribed(this, topic)
  }

  unsubscribe (topic: string): void { this.topics.delete(topic) }

  addEventListener (_type: 'subscription-change', listener: SubListener): void { this.subListeners.add(listener) }
  removeEventListener (_type: 'subscription-change', listener: SubListener): void { this.subListeners.delete(listener) }

  /** A mesh neighbour subscribed to `topic` (gossipsub's `subscription-change`). */
  notifySubscribed (peer: string, topic: string): void {
    if (this.subListeners.size === 0) return
    const evt = new CustomEvent('subscription-change', { detail: { peerId: { toString: () => peer }, subscriptions: [{ topic, subscribe: true }] } })
    for (const l of [...this.subListeners]) l(evt)
  }
}

interface GossipMessage { id: number, topic: string, from: string, frame: Uint8Array, seen: Set<number> }

/**
 * The simulated network: direct frames between endpoints and a flooding gossip over a random
 * mesh (each message is forwarded once by every node that receives it first, to its mesh
 * neighbours, and dropped as a duplicate after), each hop with latency and loss, under
 * partitions and dead nodes. Everything it decides comes from the clock's seeded random; every
 * delivery is folded into a trace hash, so two runs with one seed can be compared.
 */
export class SimNetwork {
  readonly opts: SimNetOptions
  readonly endpoints: SimEndpoint[] = []
  private readonly byPeer = new Map<string, SimEndpoint>()
  private nextMsg = 1
  private readonly trace = createHash('sha256')
  /** Deliveries folded into the trace. */
  events = 0
  /** While true, new mesh links are made silently (a warm start: the network formed earlier). */
  quiet = false

  constructor (private readonly clock: VirtualClock, opts: Partial<SimNetOptions> = {}) {
    this.opts = { ...DEFAULT_SIM_NET, ...opts }
  }

  endpoint (peerId: string): SimEndpoint {
    const e = new SimEndpoint(this, this.endpoints.length, peerId)
    this.endpoints.push(e)
    this.byPeer.set(peerId, e)
    return e
  }

  get (peerId: string): SimEndpoint | undefined { return this.byPeer.get(peerId) }

  /**
   * Hex digest of every delivery so far (time, kind, from, to). Not the size: envelope nonces
   * carry a process-wide counter, so a second run in one process has longer nonces.
   */
  traceHash (): string { return this.trace.copy().digest('hex') }

  private record (kind: string, from: number, to: number): void {
    this.events++
    this.trace.update(`${this.clock.now} ${kind} ${from} ${to}\n`)
  }

  private delay (): number {
    return this.opts.latencyMs + Math.floor(this.clock.random() * this.opts.jitterMs)
  }

  private lost (): boolean { return this.opts.loss > 0 && this.clock.random() < this.opts.loss }

  reachable (a: SimEndpoint, b: SimEndpoint): boolean { return a.alive && b.alive && a.group === b.group }

  /** Splits the network: `groups[i]` is the partition of endpoint i (absent: 0). */
  partition (groupOf: (index: number) => number): void {
    for (const e of this.endpoints) e.group = groupOf(e.index)
  }

  heal (): void { for (const e of this.endpoints) e.group = 0 }

  /** The node's process died: nothing reaches it or leaves it any more. */
  kill (index: number): void {
    const e = this.endpoints[index]
    e.alive = false
    for (const n of e.mesh) this.endpoints[n].mesh.delete(index)
    e.mesh.clear()
  }

  async send (from: SimEndpoint, peer: string, frame: Uint8Array): Promise<void> {
    if (frame.length > this.opts.maxFrameBytes) throw new FrameTooLarge(`frame of ${frame.length} bytes exceeds the limit of ${this.opts.maxFrameBytes}`, { limit: this.opts.maxFrameBytes, size: frame.length })
    const to = this.byPeer.get(peer)
    if (to === undefined || !this.reachable(from, to)) {
      await new Promise<void>((resolve) => { setTimeout(resolve, this.opts.unreachableAfterMs) })
      throw new Unreachable(`peer ${peer} is not reachable`, { peer })
    }
    from.traffic.sent++
    from.traffic.bytesSent += frame.length
    if (this.lost()) return
    setTimeout(() => {
      if (!this.reachable(from, to)) return
      to.traffic.received++
      to.traffic.bytesReceived += frame.length
      this.record('d', from.index, to.index)
      to.receiver?.onFrame(frame, { peer: from.peerId, via: 'direct' })
    }, this.delay())
  }

  /** A node joined the topic: it links to `meshLinks` random subscribed nodes, which hear of it. */
  subscribed (e: SimEndpoint, topic: string): void {
    const candidates = this.endpoints.filter(o => o !== e && o.alive && o.topics.has(topic) && this.reachable(e, o))
    const links = Math.min(this.opts.meshLinks, candidates.length)
    for (let i = 0; i < links; i++) {
      const j = i + Math.floor(this.clock.random() * (candidates.length - i))
      ;[candidates[i], candidates[j]] = [candidates[j], candidates[i]]
      const o = candidates[i]
      e.mesh.add(o.index)
      o.mesh.add(e.index)
      if (this.quiet) continue
      // gossipsub tells each side of a new link that the other subscribes
      setTimeout(() => { if (this.reachable(e, o)) o.notifySubscribed(e.peerId, topic) }, this.delay())
      setTimeout(() => { if (this.reachable(e, o)) e.notifySubscribed(o.peerId, topic) }, this.delay())
    }
  }

  publish (from: SimEndpoint, topic: string, frame: Uint8Array): void {
    const m: GossipMessage = { id: this.nextMsg++, topic, from: from.peerId, frame, seen: new Set([from.index]) }
    // the seen set is gossipsub's seen cache: kept for seenTTL, then the message is forgotten
    setTimeout(() => { m.seen.clear() }, this.opts.seenTtlMs)
    this.forward(from, m, -1)
  }

  private forward (at: SimEndpoint, m: GossipMessage, cameFrom: number): void {
    for (const n of at.mesh) {
      if (n === cameFrom) continue
      const to = this.endpoints[n]
      if (!to.topics.has(m.topic)) continue
      at.traffic.sent++
      at.traffic.bytesSent += m.frame.length
      if (this.lost()) continue
      setTimeout(() => { this.arrive(at, to, m) }, this.delay())
    }
  }

  private arrive (via: SimEndpoint, to: SimEndpoint, m: GossipMessage): void {
    if (!this.reachable(via, to)) return
    to.traffic.received++
    to.traffic.bytesReceived += m.frame.length
    if (m.seen.has(to.index)) return
    m.seen.add(to.index)
    this.record('g', via.index, to.index)
    const r = to.receiver
    if (r === undefined) return
    const origin = { peer: m.from, via: 'gossip' as const, topic: m.topic }
    // gossipsub runs the topic validator once per message, before delivering or forwarding
    if (r.validateGossip !== undefined && r.validateGossip(m.frame, origin) !== 'accept') return
    r.onFrame(m.frame, origin)
    this.forward(to, m, via.index)
  }
}
