import type { Logger } from 'pino'
import { InvalidArgument, Timeout, Unreachable } from '../lib/errors.js'
import { silentLogger } from '../lib/log.js'
import type { Did } from '../identity/did.js'
import type { Identity } from '../identity/identity.js'
import type { Authorizer, ProofSource } from '../security/authorizer.js'
import { Actor, type ActorHost, type CallOptions, type Destination } from './actor.js'
import type { AnyBehavior } from './behavior.js'
import {
  LIMITER_MAX_SENDERS, MAILBOX_CAPACITY, MAILBOX_CONCURRENCY, PEER_INFLIGHT_MAX, PER_SENDER_BURST, PER_SENDER_RATE, REPLAY_MAX_ENTRIES
} from './constants.js'
import { Inbound, type DispatchStats } from './inbound.js'
import { RateLimiter } from './limiter.js'
import type { ActorObserver } from './observer.js'
import type { MailboxLimits as ActorMailboxLimits } from './mailbox.js'
import { Outbound, type RelayReply } from './outbound.js'
import { PendingReplies } from './pending.js'
import { ReplayGuard } from './replay.js'
import { ROOT_INBOX, type Handle, type Transport } from './types.js'

export { Actor, type CallOptions, type Destination } from './actor.js'
export type { ActorObserver } from './observer.js'
export type { DispatchStats, Reply } from './inbound.js'
export { unwrapReply, type RelayReply } from './outbound.js'

export interface MailboxLimits {
  concurrency?: number
  capacity?: number
  /** Envelopes per second (and burst) from one signing sender, and from one connected peer. */
  perSenderRate?: number
  perSenderBurst?: number
  /** Envelopes remembered for replay detection at once (default REPLAY_MAX_ENTRIES). */
  replayEntries?: number
  /** Envelopes of one connected peer admitted and not yet answered (default PEER_INFLIGHT_MAX). */
  perPeerInflight?: number
  /** Jobs of one peer waiting in one mailbox (default MAILBOX_PER_KEY). */
  perPeerQueued?: number
}

export interface ActorSystemInit {
  identity: Identity
  transport: Transport
  authorizer: Authorizer
  proofs?: ProofSource
  behaviors: readonly AnyBehavior[]
  services: object
  now?: () => number
  log?: Logger
  limits?: MailboxLimits
  /**
   * Sign the node's own envelopes too. By default they travel host-authenticated (unsigned) on
   * channels that authenticate the node; set this where every envelope must prove its sender to
   * third parties after the fact (costs one Ed25519 signature per envelope).
   */
  signAllEnvelopes?: boolean
  /** Metrics hooks (observer.ts). */
  observer?: ActorObserver
}

export interface ActorInit {
  inbox: string
  identity: Identity
  /** What kind of actor (`allocation`, `resources`, …), shown in listings. */
  kind: string
  /** The context that controls this actor (its handle's `did`): it may invoke the actor's behaviours. Defaults to the node. */
  controller?: Did
  behaviors: readonly AnyBehavior[]
  services: object
  /** Defaults to the node's authorizer. */
  authorizer?: Authorizer
  proofs?: ProofSource
  /** This actor's mailbox; defaults to the node's limits. An allocation handles one message at a time. */
  mailbox?: Partial<ActorMailboxLimits>
}

/** One running actor, as `/dms/node/actors/list` shows it. */
export interface ActorInfo {
  handle: Handle
  kind: string
  running: number
  queued: number
  /** Messages it has handled since it started. */
  handled: number
}

/**
 * The actors of one node over one transport: the registry of actors by inbox, the calls waiting
 * for replies, and the two halves of the pipeline — `Inbound` (every frame that arrives, read it
 * top to bottom in inbound.ts) and `Outbound` (invoke, send, publish, replies, relay).
 */
export class ActorSystem implements ActorHost {
  readonly peerId: string
  readonly signsAll: boolean
  readonly root: Actor
  readonly stats: DispatchStats = { received: 0, refused: {}, unanswerable: 0, lateReplies: 0, gossipRejected: 0, gossipIgnored: 0 }
  private readonly actors = new Map<string, Actor>()
  private readonly byDid = new Map<string, Actor>()
  private readonly pending: PendingReplies
  private readonly inbound: Inbound
  private readonly outbound: Outbound
  private readonly transport: Transport
  private readonly mailbox: ActorMailboxLimits
  private readonly log: Logger
  private readonly topicListeners = new Map<string, number>()
  private stopped = false

  constructor (init: ActorSystemInit) {
    this.transport = init.transport
    this.peerId = init.transport.peerId
    this.signsAll = init.signAllEnvelopes ?? false
    const now = init.now ?? Date.now
    this.log = init.log ?? silentLogger()
    if (init.identity.peerId !== this.peerId) throw new InvalidArgument('the root actor\'s key must be the transport\'s peer key')
    this.mailbox = { concurrency: init.limits?.concurrency ?? MAILBOX_CONCURRENCY, capacity: init.limits?.capacity ?? MAILBOX_CAPACITY, ...(init.limits?.perPeerQueued !== undefined ? { perKey: init.limits.perPeerQueued } : {}) }
    const rate = init.limits?.perSenderRate ?? PER_SENDER_RATE
    const burst = init.limits?.perSenderBurst ?? PER_SENDER_BURST
    this.pending = new PendingReplies(now)
    this.inbound = new Inbound({
      peerId: this.peerId,
      nodeDid: init.identity.did,
      maxFrameBytes: () => this.transport.maxFrameBytes,
      actors: this.actors,
      pending: this.pending,
      replay: new ReplayGuard(now, init.limits?.replayEntries ?? REPLAY_MAX_ENTRIES),
      peerLimiter: new RateLimiter(rate, burst, LIMITER_MAX_SENDERS, now),
      senderLimiter: new RateLimiter(rate, burst, LIMITER_MAX_SENDERS, now),
      peerInflight: init.limits?.perPeerInflight ?? PEER_INFLIGHT_MAX,
      reply: (actor, to, cont, exp, reply) => { this.outbound.reply(actor, to, cont, exp, reply) },
      stats: this.stats,
      now,
      log: this.log,
      observer: init.observer
    })
    this.outbound = new Outbound({
      peerId: this.peerId,
      transport: this.transport,
      pending: this.pending,
      localByDid: (did) => this.byDid.get(did),
      deliverLocal: (frame, origin, verified) => { this.inbound.onFrame(frame, origin, verified) },
      isStopped: () => this.stopped,
      now,
      log: this.log,
      observer: init.observer
    })
    this.root = new Actor(this, { identity: init.identity, inbox: ROOT_INBOX, controller: init.identity.did, kind: 'node', behaviors: init.behaviors, services: init.services, authorizer: init.authorizer, proofs: init.proofs, mailbox: this.mailbox })
    this.actors.set(ROOT_INBOX, this.root)
    this.transport.setReceiver({
      onFrame: (frame, origin) => { this.inbound.onFrame(frame, origin, false) },
      onOversize: (head, total, origin) => { this.inbound.onOversize(head, total, origin) },
      validateGossip: (frame, origin) => this.inbound.validateGossip(frame, origin)
    })
    for (const t of this.root.topics()) this.subscribeTopic(t)
  }

  /** Envelopes of a connected peer admitted and not yet answered (see PEER_INFLIGHT_MAX). */
  inflightOf (peer: string): number { return this.inbound.inflightOf(peer) }

  /** A child actor with its own key, inbox and mailbox on this node. */
  spawn (init: ActorInit): Actor {
    if (this.stopped) throw new InvalidArgument('the node is stopping')
    if (this.actors.has(init.inbox)) throw new InvalidArgument(`inbox '${init.inbox}' is taken`)
    if (this.byDid.has(init.identity.did) || init.identity.did === this.root.identity.did) throw new InvalidArgument(`an actor with key ${init.identity.did} already runs here`)
    const a = new Actor(this, {
      identity: init.identity,
      inbox: init.inbox,
      controller: init.controller ?? this.root.identity.did,
      kind: init.kind,
      behaviors: init.behaviors,
      services: init.services,
      authorizer: init.authorizer ?? this.root.authorizer,
      proofs: init.proofs ?? this.root.proofs,
      mailbox: { ...this.mailbox, ...init.mailbox }
    })
    this.actors.set(init.inbox, a)
    this.byDid.set(init.identity.did, a)
    for (const t of a.topics()) this.subscribeTopic(t)
    return a
  }

  /** The actor living in `inbox`, if any. */
  actor (inbox: string): Actor | undefined { return this.actors.get(inbox) }

  /** Every running actor with its mailbox depth. */
  list (): ActorInfo[] {
    return [...this.actors.values()].map(a => ({ handle: a.handle, kind: a.kind, ...a.mailbox.depth, handled: a.mailbox.count }))
  }

  subscribeTopic (topic: string): void {
    const n = this.topicListeners.get(topic) ?? 0
    this.topicListeners.set(topic, n + 1)
    if (n === 0) this.transport.subscribe(topic)
  }

  private unsubscribeTopic (topic: string): void {
    const n = this.topicListeners.get(topic) ?? 0
    if (n <= 1) {
      this.topicListeners.delete(topic)
      if (n === 1) this.transport.unsubscribe(topic)
    } else {
      this.topicListeners.set(topic, n - 1)
    }
  }

  /** An actor is stopping: its calls fail now, its topics are released, its inbox is gone. */
  retire (actor: Actor): void {
    this.pending.failWhere(e => e.owner === actor, () => new Timeout(`actor ${actor.inbox} stopped before the reply arrived`))
    for (const t of actor.topics()) this.unsubscribeTopic(t)
    if (actor === this.root) return
    if (this.actors.get(actor.inbox) === actor) this.actors.delete(actor.inbox)
    if (this.byDid.get(actor.identity.did) === actor) this.byDid.delete(actor.identity.did)
  }

  onJobError = (err: unknown): void => { this.inbound.dispatchFailed(undefined, err) }

  /**
   * Stops accepting frames, closes every mailbox (children first; waiting messages are answered
   * `NotRunning`) and rejects every outstanding call at once. Handlers already running finish on
   * their own deadline; whoever owns a child actor stops it properly (`Actor.stop`) before this.
   */
  stop (): void {
    if (this.stopped) return
    this.stopped = true
    this.inbound.stop()
    const actors = [...this.actors.values()].reverse()
    for (const a of actors) void a.stop('refuse')
    this.pending.failWhere(() => true, () => new Timeout('the node stopped before the reply arrived'))
  }

  /**
   * The transport lost its last connection to `peer`: invocations waiting on it fail now with
   * `Unreachable` rather than at their deadline.
   */
  peerGone (peer: string): void {
    this.pending.failWhere(e => e.expectPeer === peer, () => new Unreachable(`the connection to ${peer} closed before it replied`, { peer }))
  }

  resolveDestination (dest: Destination): Handle { return this.outbound.resolveDestination(dest) }

  invokeAs<T>(actor: Actor, dest: Destination, behavior: string, payload: unknown, opts: CallOptions): Promise<T> {
    return this.outbound.invokeAs<T>(actor, dest, behavior, payload, opts)
  }

  async sendAs (actor: Actor, dest: Destination, behavior: string, payload: unknown, opts: CallOptions): Promise<void> {
    await this.outbound.sendAs(actor, dest, behavior, payload, opts)
  }

  async publishAs (actor: Actor, topic: string, behavior: string, payload: unknown, opts: CallOptions): Promise<void> {
    await this.outbound.publishAs(actor, topic, behavior, payload, opts)
  }

  /** Relays an envelope signed elsewhere (the local API); see `Outbound.relay`. */
  async relay (frame: Uint8Array, mode: 'send' | 'invoke' | 'broadcast'): Promise<RelayReply | undefined> {
    return await this.outbound.relay(frame, mode, this)
  }
}
