import type { Logger } from 'pino'
import {
  BadRequest, DmsError, Expired, FrameTooLarge, HandlerFailed, InvalidArgument, Overloaded, Replayed,
  Timeout, Unauthorized, UnknownBehavior, Unreachable, errorFromWire, toWireError, type WireError
} from '../lib/errors.js'
import { silentLogger } from '../lib/log.js'
import { didFromPeerId, isDid, peerIdFromDid, type Did } from '../identity/did.js'
import type { Identity } from '../identity/identity.js'
import type { AuthorizeRequest, Authorizer, ProofSource } from '../security/authorizer.js'
import type { AnyBehavior, CallInfo } from './behavior.js'
import {
  DEFAULT_ENVELOPE_LIFETIME_MS, LIMITER_MAX_SENDERS, MAILBOX_CAPACITY, MAILBOX_CONCURRENCY,
  MAX_ENVELOPE_LIFETIME_MS, PER_SENDER_BURST, PER_SENDER_RATE, REPLY_PREFIX
} from './constants.js'
import { decodeEnvelope, encodeEnvelope, newNonce, peekHeader, verifyEnvelope, type Header } from './envelope.js'
import { RateLimiter } from './limiter.js'
import { DuplicateBehaviorError, buildRegistry, type Registered } from './registry.js'
import { ReplayGuard } from './replay.js'
import { ROOT_INBOX, type Envelope, type FrameOrigin, type Handle, type Transport } from './types.js'

/** A reply on the wire: exactly one of `ok` or `error`. */
export type Reply = { ok: unknown } | { error: WireError }

/** Where to send: a full handle, or a DID / PeerId naming a node's root actor. */
export type Destination = Handle | string

export interface CallOptions {
  /** Milliseconds from now until the call's deadline. `invoke` requires this or `deadline`. */
  timeout?: number
  /** Absolute deadline, unix ms. */
  deadline?: number
  /** Capability tokens to attach; by default the actor's proof source is asked. */
  cap?: string[]
}

export interface MailboxLimits {
  concurrency?: number
  capacity?: number
  perSenderRate?: number
  perSenderBurst?: number
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
}

export interface ActorInit {
  inbox: string
  identity: Identity
  /** The context that controls this actor (its handle's `did`); defaults to the node. */
  controller?: Did
  behaviors: readonly AnyBehavior[]
  services: object
  /** Defaults to the node's authorizer. */
  authorizer?: Authorizer
  proofs?: ProofSource
}

/** A mailbox job: undefined when it finished synchronously, else a promise of its end. */
type Job = () => Promise<void> | undefined

/** What a relayed invocation (from the local API) resolves to. */
export interface RelayReply { from: Handle, reply: Reply }

interface Pending {
  expectPeer: string
  resolve: (r: { env: Envelope }) => void
  reject: (e: Error) => void
  timer: NodeJS.Timeout
}

/** Counters of what the dispatcher refused or could not answer; exposed for status and tests. */
export interface DispatchStats {
  received: number
  refused: Record<string, number>
  /** Frames that could not be answered (no header, no reply-to, or a broadcast): logged, counted. */
  unanswerable: number
  lateReplies: number
}

export class Actor {
  readonly handle: Handle
  readonly registry: Map<string, Registered>
  /**
   * Signs this actor's envelopes; undefined for the node itself, whose envelopes the transport
   * authenticates (unless the system signs all envelopes).
   */
  readonly signer: ((data: Uint8Array) => Uint8Array) | undefined
  private running = 0
  private readonly queue: Job[] = []

  constructor (
    private readonly system: ActorSystem,
    readonly identity: Identity,
    readonly inbox: string,
    controller: Did,
    behaviors: readonly AnyBehavior[],
    services: object,
    readonly authorizer: Authorizer,
    readonly proofs: ProofSource | undefined,
    private readonly limits: Required<Pick<MailboxLimits, 'concurrency' | 'capacity'>>
  ) {
    this.handle = { id: identity.did, did: controller, addr: { peer: system.peerId, inbox } }
    this.registry = buildRegistry(behaviors, services)
    this.signer = identity.peerId === system.peerId && !system.signsAll ? undefined : identity.sign
  }

  /** Request–reply with a mandatory deadline; rejects with the remote's typed error. */
  invoke<T = unknown>(dest: Destination, behavior: string, payload: unknown, opts: CallOptions): Promise<T> {
    // the system's own promise, not a wrapper: one turn less between the reply and the caller
    return this.system.invokeAs<T>(this, dest, behavior, payload, opts)
  }

  /** One-way message; resolves once handed to the transport. */
  async send (dest: Destination, behavior: string, payload: unknown, opts: CallOptions = {}): Promise<void> {
    await this.system.sendAs(this, dest, behavior, payload, opts)
  }

  /** Broadcast on a gossipsub topic; receivers need a capability on the topic unless the behaviour is public. */
  async publish (topic: string, behavior: string, payload: unknown, opts: CallOptions = {}): Promise<void> {
    await this.system.publishAs(this, topic, behavior, payload, opts)
  }

  /** Adds a behaviour at run time; a broadcast behaviour subscribes to its topic. */
  register (decl: AnyBehavior, services: object): void {
    const [entry] = buildRegistry([decl], services)
    if (this.registry.has(decl.path)) throw new DuplicateBehaviorError(`behaviour ${decl.path} is declared twice`)
    this.registry.set(decl.path, entry[1])
    if (decl.topic !== undefined) this.system.subscribeTopic(decl.topic)
  }

  /**
   * Mailbox admission: false when full (the caller answers Overloaded). A job that finishes
   * synchronously (returns undefined) frees its slot at once; one that returns a promise holds
   * it until the promise settles.
   */
  admit (job: Job): boolean {
    if (this.running < this.limits.concurrency) {
      this.start(job)
      return true
    }
    if (this.queue.length >= this.limits.capacity) return false
    this.queue.push(job)
    return true
  }

  private start (job: Job): void {
    this.running++
    let pending: Promise<void> | undefined
    try {
      pending = job()
    } finally {
      // a job that finished, or threw, at once holds no slot (the throw goes on to the caller)
      if (pending === undefined) this.running--
    }
    if (pending === undefined) return
    void pending.finally(() => {
      this.running--
      this.startQueued()
    })
  }

  /** Starts waiting jobs while there is room (a loop: synchronous jobs must not recurse). */
  private startQueued (): void {
    while (this.running < this.limits.concurrency && this.queue.length > 0) this.start(this.queue.shift() as Job)
  }

  get load (): { running: number, queued: number } { return { running: this.running, queued: this.queue.length } }
}

/**
 * The actors of one node over one transport. Inbound frames go through, in this order:
 * frame size → decode → host claim → signature → expiry → replay → reply match → actor and
 * behaviour exist → capability → rate limit → mailbox → request schema → handler. Each refusal of
 * an envelope with a reply-to is answered with a typed error at once. Nothing yields to the event
 * loop unless it must wait (a cold capability chain, a full mailbox, a handler's promise), so a
 * quick request is answered in the turn it arrived in.
 */
export class ActorSystem {
  readonly peerId: string
  readonly signsAll: boolean
  readonly root: Actor
  readonly stats: DispatchStats = { received: 0, refused: {}, unanswerable: 0, lateReplies: 0 }
  private readonly actors = new Map<string, Actor>()
  private readonly pending = new Map<string, Pending>()
  private readonly replay: ReplayGuard
  private readonly limiter: RateLimiter
  private readonly peerDids = new Map<string, string>()
  private readonly destinations = new Map<string, Handle>()
  private readonly transport: Transport
  private readonly now: () => number
  private readonly log: Logger
  private readonly mailbox: Required<Pick<MailboxLimits, 'concurrency' | 'capacity'>>
  private stopped = false

  constructor (init: ActorSystemInit) {
    this.transport = init.transport
    this.peerId = init.transport.peerId
    this.signsAll = init.signAllEnvelopes ?? false
    this.now = init.now ?? Date.now
    this.log = init.log ?? silentLogger()
    this.replay = new ReplayGuard(this.now)
    this.limiter = new RateLimiter(init.limits?.perSenderRate ?? PER_SENDER_RATE, init.limits?.perSenderBurst ?? PER_SENDER_BURST, LIMITER_MAX_SENDERS, this.now)
    this.mailbox = { concurrency: init.limits?.concurrency ?? MAILBOX_CONCURRENCY, capacity: init.limits?.capacity ?? MAILBOX_CAPACITY }
    if (init.identity.peerId !== this.peerId) throw new InvalidArgument('the root actor\'s key must be the transport\'s peer key')
    this.root = new Actor(this, init.identity, ROOT_INBOX, init.identity.did, init.behaviors, init.services, init.authorizer, init.proofs, this.mailbox)
    this.actors.set(ROOT_INBOX, this.root)
    this.transport.setReceiver({
      onFrame: (frame, origin) => { this.onFrame(frame, origin, false) },
      onOversize: (head, total, origin) => { this.onOversize(head, total, origin) }
    })
    for (const [, r] of this.root.registry) if (r.decl.topic !== undefined) this.transport.subscribe(r.decl.topic)
  }

  /** A child actor with its own key and inbox on this node. */
  spawn (init: ActorInit): Actor {
    if (this.actors.has(init.inbox)) throw new InvalidArgument(`inbox '${init.inbox}' is taken`)
    const a = new Actor(this, init.identity, init.inbox, init.controller ?? this.root.identity.did, init.behaviors, init.services, init.authorizer ?? this.root.authorizer, init.proofs ?? this.root.proofs, this.mailbox)
    this.actors.set(init.inbox, a)
    return a
  }

  subscribeTopic (topic: string): void { this.transport.subscribe(topic) }

  despawn (inbox: string): void {
    if (inbox !== ROOT_INBOX) this.actors.delete(inbox)
  }

  /** Rejects every outstanding invoke and stops accepting frames. */
  stop (): void {
    this.stopped = true
    for (const [cont, p] of this.pending) {
      clearTimeout(p.timer)
      p.reject(new Timeout('the node stopped before the reply arrived'))
      this.pending.delete(cont)
    }
    for (const [, r] of this.root.registry) if (r.decl.topic !== undefined) this.transport.unsubscribe(r.decl.topic)
  }

  /**
   * The transport lost its last connection to `peer`: invocations waiting on it fail now with
   * `Unreachable` rather than at their deadline.
   */
  peerGone (peer: string): void {
    for (const [cont, p] of this.pending) {
      if (p.expectPeer !== peer) continue
      clearTimeout(p.timer)
      this.pending.delete(cont)
      p.reject(new Unreachable(`the connection to ${peer} closed before it replied`, { peer }))
    }
  }

  // ---------------------------------------------------------------- outbound

  resolveDestination (dest: Destination): Handle {
    if (typeof dest !== 'string') return dest
    // base58 conversions cost more than the rest of an invoke's bookkeeping: remember them
    let handle = this.destinations.get(dest)
    if (handle === undefined) {
      if (dest.startsWith('did:')) {
        if (!isDid(dest)) throw new InvalidArgument(`not an Ed25519 did:key: ${dest}`)
        handle = { id: dest, did: dest, addr: { peer: peerIdFromDid(dest), inbox: ROOT_INBOX } }
      } else {
        const did = didFromPeerId(dest)
        handle = { id: did, did, addr: { peer: dest, inbox: ROOT_INBOX } }
      }
      if (this.destinations.size >= 10_000) this.destinations.clear()
      this.destinations.set(dest, handle)
    }
    return handle
  }

  private deadlineOf (opts: CallOptions, required: boolean): number {
    if (opts.deadline !== undefined) return opts.deadline
    if (opts.timeout !== undefined) {
      if (!(opts.timeout > 0)) throw new InvalidArgument(`timeout must be positive, got ${opts.timeout}`)
      return this.now() + opts.timeout
    }
    if (required) throw new InvalidArgument('invoke needs a deadline: pass { timeout } or { deadline }')
    return this.now() + DEFAULT_ENVELOPE_LIFETIME_MS
  }

  /**
   * Tokens to attach: the caller's own, none (public behaviours, replies, no proof source), or the
   * actor's provide anchors' — only that last answer is asynchronous, so a call that needs no
   * lookup is encoded and sent without waiting a turn.
   */
  private proofsFor (actor: Actor, to: Handle, behavior: string, topic: string | undefined, opts: CallOptions): string[] | undefined | Promise<string[] | undefined> {
    if (opts.cap !== undefined) return opts.cap.length > 0 ? opts.cap : undefined
    if (actor.proofs === undefined || behavior.startsWith('/public/') || behavior.startsWith(REPLY_PREFIX)) return undefined
    return actor.proofs.proofsFor(behavior, to.id, topic).then(proofs => proofs.length > 0 ? proofs : undefined)
  }

  async invokeAs<T>(actor: Actor, destination: Destination, behavior: string, payload: unknown, opts: CallOptions): Promise<T> {
    if (this.stopped) throw new Timeout('the node is stopping')
    const deadline = this.deadlineOf(opts, true)
    const to = this.resolveDestination(destination)
    const nonce = newNonce()
    const cont = `${REPLY_PREFIX}${nonce}`
    const found = this.proofsFor(actor, to, behavior, undefined, opts)
    const env: Envelope = { v: 1, to, from: actor.handle, be: behavior, nonce, exp: deadline, cont, msg: payload, cap: isThenable(found) ? await found : found }
    const frame = encodeEnvelope(env, actor.signer)
    const replied = this.awaitReply(cont, to.addr.peer, deadline, behavior)
    this.route(frame, to.addr.peer, deadline).catch((err: unknown) => { this.failPending(cont, err) })
    const { env: reply } = await replied
    return unwrapReply<T>(reply.msg)
  }

  async sendAs (actor: Actor, destination: Destination, behavior: string, payload: unknown, opts: CallOptions): Promise<void> {
    const deadline = this.deadlineOf(opts, false)
    const to = this.resolveDestination(destination)
    const found = this.proofsFor(actor, to, behavior, undefined, opts)
    const env: Envelope = { v: 1, to, from: actor.handle, be: behavior, nonce: newNonce(), exp: deadline, msg: payload, cap: isThenable(found) ? await found : found }
    await this.route(encodeEnvelope(env, actor.signer), to.addr.peer, deadline)
  }

  async publishAs (actor: Actor, topic: string, behavior: string, payload: unknown, opts: CallOptions): Promise<void> {
    const deadline = this.deadlineOf(opts, false)
    const to: Handle = { id: actor.handle.id, did: actor.handle.did, addr: { peer: '*', inbox: ROOT_INBOX } }
    const found = this.proofsFor(actor, to, behavior, topic, opts)
    const env: Envelope = { v: 1, to, from: actor.handle, be: behavior, nonce: newNonce(), exp: deadline, topic, msg: payload, cap: isThenable(found) ? await found : found }
    await this.transport.publish(topic, encodeEnvelope(env, actor.signer))
  }

  /**
   * Relays an envelope signed elsewhere (the CLI, through the local API). The API adds no
   * authority: the signature is always checked, and the sender must name this node as the place
   * its replies go. For an invoke, resolves with the reply.
   */
  async relay (frame: Uint8Array, mode: 'send' | 'invoke' | 'broadcast'): Promise<RelayReply | undefined> {
    if (frame.length > this.transport.maxFrameBytes) throw new FrameTooLarge(`frame of ${frame.length} bytes exceeds the limit of ${this.transport.maxFrameBytes}`, { limit: this.transport.maxFrameBytes, size: frame.length })
    const d = decodeEnvelope(frame)
    const env = d.envelope
    if (d.signature === undefined) throw new Unauthorized('the API relays only signed envelopes', { reason: 'unsigned' })
    if (!verifyEnvelope(d)) throw new Unauthorized('the envelope\'s signature does not verify with its sender\'s key', { reason: 'bad-signature' })
    if (env.from.addr.peer !== this.peerId) throw new BadRequest(`from.addr.peer must be this node (${this.peerId}), where replies are delivered`)
    if (env.exp <= this.now()) throw new Expired('the envelope expired before it was relayed')
    if (mode === 'broadcast') {
      if (env.topic === undefined) throw new BadRequest('a broadcast envelope needs a topic')
      await this.transport.publish(env.topic, frame)
      return undefined
    }
    if (mode === 'send') {
      await this.route(frame, env.to.addr.peer, env.exp, true)
      return undefined
    }
    if (env.cont === undefined) throw new BadRequest('an invoke envelope needs a reply-to (cont)')
    if (!env.cont.startsWith(REPLY_PREFIX)) throw new BadRequest(`a reply-to must lie under ${REPLY_PREFIX}`)
    const cont = env.cont
    const replied = this.awaitReply(cont, env.to.addr.peer, env.exp, env.be)
    this.route(frame, env.to.addr.peer, env.exp, true).catch((err: unknown) => { this.failPending(cont, err) })
    const { env: reply } = await replied
    return { from: reply.from, reply: asReply(reply.msg) }
  }

  /** Delivers a frame: locally, or on the peer's stream, trying no longer than `deadline`. */
  private async route (frame: Uint8Array, peer: string, deadline: number, verified = false): Promise<void> {
    if (peer === this.peerId) {
      if (frame.length > this.transport.maxFrameBytes) throw new FrameTooLarge(`frame of ${frame.length} bytes exceeds the limit of ${this.transport.maxFrameBytes}`, { limit: this.transport.maxFrameBytes, size: frame.length })
      queueMicrotask(() => { this.onFrame(frame, { peer, via: 'local' }, verified) })
      return
    }
    await this.transport.send(peer, frame, deadline)
  }

  private awaitReply (cont: string, expectPeer: string, deadline: number, behavior: string): Promise<{ env: Envelope }> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(cont)
        reject(new Timeout(`no reply to ${behavior} from ${expectPeer} before the deadline`, { behavior, peer: expectPeer }))
      }, Math.max(0, deadline - this.now()))
      this.pending.set(cont, { expectPeer, resolve, reject, timer })
    })
  }

  /** The invoke's frame could not be sent: its caller learns why at once. */
  private failPending (cont: string, err: unknown): void {
    const p = this.pending.get(cont)
    if (p === undefined) return
    clearTimeout(p.timer)
    this.pending.delete(cont)
    p.reject(err instanceof Error ? err : new Unreachable(String(err)))
  }

  // ---------------------------------------------------------------- inbound

  private didOfPeer (peer: string): string | undefined {
    let did = this.peerDids.get(peer)
    if (did === undefined) {
      try { did = didFromPeerId(peer) } catch { return undefined }
      if (this.peerDids.size > 10_000) this.peerDids.clear()
      this.peerDids.set(peer, did)
    }
    return did
  }

  private refuse (err: DmsError, header: Header | undefined, origin: FrameOrigin, replier?: Actor): void {
    this.stats.refused[err.name] = (this.stats.refused[err.name] ?? 0) + 1
    if (header?.cont === undefined || origin.via === 'gossip') {
      this.stats.unanswerable++
      this.log.debug({ err: err.toWire(), from: origin.peer, be: header?.be, via: origin.via }, 'refused an envelope that has no reply-to')
      return
    }
    // Answer the connection the frame came on, whatever peer the envelope claims.
    const to: Handle = { ...header.from, addr: { peer: origin.peer, inbox: header.from.addr.inbox } }
    this.reply(replier ?? this.actors.get(header.to.addr.inbox) ?? this.root, to, header.cont, header.exp, { error: err.toWire() })
  }

  private reply (actor: Actor, to: Handle, cont: string, exp: number, reply: Reply): void {
    // An error about expiry must still reach the caller: give such replies a short fresh lifetime.
    const deadline = Math.max(exp, this.now() + 5_000)
    const env: Envelope = { v: 1, to, from: actor.handle, be: cont, nonce: newNonce(), exp: deadline, msg: reply }
    let frame: Uint8Array
    try {
      frame = encodeEnvelope(env, actor.signer)
    } catch (err) {
      // A result too large for a header-limited frame cannot happen (payloads are unbounded in the
      // header); anything else is a bug worth a log line.
      this.log.error({ err }, 'could not encode a reply')
      return
    }
    if (frame.length > this.transport.maxFrameBytes) {
      frame = encodeEnvelope({ ...env, msg: { error: new FrameTooLarge(`the reply of ${frame.length} bytes exceeds the frame limit of ${this.transport.maxFrameBytes}`, { limit: this.transport.maxFrameBytes }).toWire() } }, actor.signer)
    }
    this.route(frame, to.addr.peer, deadline).catch((err: unknown) => {
      this.log.warn({ err: toWireError(err), to: to.addr.peer, cont }, 'could not deliver a reply')
    })
  }

  private onOversize (head: Uint8Array, total: number, origin: FrameOrigin): void {
    this.stats.received++
    const header = peekHeader(head)
    const limit = this.transport.maxFrameBytes
    this.refuse(new FrameTooLarge(`frame of ${total} bytes exceeds this node's limit of ${limit}`, { limit, size: total }), header, origin)
  }

  /** `verified`: the signature was already checked (frames relayed from the API). */
  private onFrame (frame: Uint8Array, origin: FrameOrigin, verified: boolean): void {
    if (this.stopped) return
    this.stats.received++
    let env: Envelope
    let d
    try {
      d = decodeEnvelope(frame)
      env = d.envelope
    } catch (err) {
      this.refuse(err as DmsError, peekHeader(frame), origin)
      return
    }
    const now = this.now()

    // Host claim: the sender says its replies go to the peer the bytes came from. A frame
    // claiming another host is refused and answered on the connection it actually came on.
    if (env.from.addr.peer !== origin.peer) {
      this.refuse(new Unauthorized(`the envelope claims host ${env.from.addr.peer} but came from ${origin.peer}`, { reason: 'host-mismatch' }), env, origin)
      return
    }
    // Signature: the transport already authenticated the connected host (Noise, or gossipsub's
    // StrictSign), so an envelope from that same host's key needs no signature of its own, nor a
    // second check of one it carries. Anything else — a user's key, a child actor's, anything
    // relayed — must be signed, and is verified.
    const hostDid = origin.via === 'local' ? this.root.identity.did : this.didOfPeer(origin.peer)
    if (!verified && env.from.id !== hostDid) {
      if (d.signature === undefined) {
        this.refuse(new Unauthorized(`an envelope from ${env.from.id} must be signed: only the connected host's own envelopes travel unsigned`, { reason: 'unsigned' }), env, origin)
        return
      }
      if (!verifyEnvelope(d)) {
        this.refuse(new Unauthorized('the envelope\'s signature does not verify with its sender\'s key', { reason: 'bad-signature' }), env, origin)
        return
      }
    }
    if (env.exp <= now) {
      this.refuse(new Expired(`the envelope expired ${now - env.exp} ms ago`, { exp: env.exp }), env, origin)
      return
    }
    if (env.exp > now + MAX_ENVELOPE_LIFETIME_MS) {
      this.refuse(new BadRequest(`the envelope's expiry is more than ${MAX_ENVELOPE_LIFETIME_MS} ms away`), env, origin)
      return
    }
    // Replay: a host's own envelope on its direct stream cannot be replayed by anyone else (Noise
    // numbers and authenticates every message of the session, and an envelope in the host's name
    // on any other channel is refused above as unsigned), so only the other envelopes — signed
    // ones, relayed ones, gossip (which a peer may forward again later) — need remembering.
    const hostOwn = origin.via === 'direct' && env.from.id === hostDid
    if (!hostOwn && !this.replay.check(env.nonce, env.exp)) {
      this.refuse(new Replayed('this envelope (nonce) was already received'), env, origin)
      return
    }

    if (env.be.startsWith(REPLY_PREFIX)) {
      const p = this.pending.get(env.be)
      if (p === undefined || p.expectPeer !== origin.peer) {
        this.stats.lateReplies++
        this.log.debug({ be: env.be, from: origin.peer }, 'a reply that no one awaits (late, or not from the invoked peer)')
        return
      }
      clearTimeout(p.timer)
      this.pending.delete(env.be)
      p.resolve({ env })
      return
    }

    if (origin.via !== 'gossip' && env.to.addr.peer !== this.peerId) {
      this.refuse(new BadRequest(`the envelope is addressed to ${env.to.addr.peer}, not this node`), env, origin)
      return
    }
    const actor = this.actors.get(origin.via === 'gossip' ? ROOT_INBOX : env.to.addr.inbox)
    if (actor === undefined) {
      this.refuse(new UnknownBehavior(`no actor with inbox '${env.to.addr.inbox}' on this node`, { inbox: env.to.addr.inbox }), env, origin)
      return
    }
    const entry = actor.registry.get(env.be)
    if (entry === undefined) {
      this.refuse(new UnknownBehavior(`no behaviour ${env.be} on this actor`, { behavior: env.be }), env, origin, actor)
      return
    }
    const topic = entry.decl.topic
    if (topic !== undefined && (origin.via !== 'gossip' || env.topic !== topic)) {
      this.refuse(new BadRequest(`${env.be} is a broadcast behaviour: it is only delivered on topic ${topic}`), env, origin, actor)
      return
    }
    if (topic === undefined && origin.via === 'gossip') {
      this.refuse(new BadRequest(`${env.be} is not a broadcast behaviour`), env, origin, actor)
      return
    }
    this.authorize(actor, entry, env, origin)
  }

  /**
   * Capability check, then admission. Synchronous when the answer needs no verification (no
   * capability required, the actor itself, a root, a cached chain): a synchronous handler's reply
   * then leaves in the same turn as the request arrived, before the muxer's own bookkeeping writes.
   */
  private authorize (actor: Actor, entry: Registered, env: Envelope, origin: FrameOrigin): void {
    const capability = entry.capability
    if (capability === null || env.from.id === actor.identity.did) {
      this.admit(actor, entry, env, origin)
      return
    }
    const req: AuthorizeRequest = { invoker: env.from.id, audience: actor.identity.did, capability, topic: env.topic, proofs: env.cap ?? [], now: this.now() }
    if (actor.authorizer.allowsNow?.(req) === true) {
      this.admit(actor, entry, env, origin)
      return
    }
    actor.authorizer.authorize(req).then(() => { this.admit(actor, entry, env, origin) }, (err: unknown) => {
      this.refuse(err instanceof DmsError ? err : new Unauthorized(String(err), { reason: 'error' }), env, origin, actor)
    }).catch((err: unknown) => { this.dispatchFailed(env, err) })
  }

  /**
   * A bug past the point where a refusal could be sent. The synchronous path throws to the
   * transport, which logs it; the asynchronous paths end here rather than in an unhandled
   * rejection, which would stop the daemon.
   */
  private dispatchFailed (env: Envelope, err: unknown): void {
    this.log.error({ err, be: env.be, from: env.from.id }, 'dispatch failed')
  }

  /** Rate limits, then the actor's mailbox. */
  private admit (actor: Actor, entry: Registered, env: Envelope, origin: FrameOrigin): void {
    const limits = entry.decl.limits
    if (!this.limiter.take(env.from.id) || (limits?.perSenderPerSec !== undefined && !this.limiter.take(`${env.be}\u0000${env.from.id}`, limits.perSenderPerSec, limits.burst ?? limits.perSenderPerSec))) {
      this.refuse(new Overloaded(`too many envelopes from ${env.from.id}; slow down`, { retryAfterMs: 1000 }), env, origin, actor)
      return
    }
    const admitted = actor.admit(() => this.runHandler(actor, entry, env, origin))
    if (!admitted) {
      const { running, queued } = actor.load
      this.refuse(new Overloaded(`the mailbox of ${actor.inbox} is full (${running} running, ${queued} queued)`, { retryAfterMs: 100 }), env, origin, actor)
    }
  }

  /** Runs the handler; returns a promise only when the handler itself returned one. */
  private runHandler (actor: Actor, entry: Registered, env: Envelope, origin: FrameOrigin): Promise<void> | undefined {
    const remaining = env.exp - this.now()
    if (remaining <= 0) {
      this.refuse(new Expired('the envelope expired while waiting in the mailbox', { exp: env.exp }), env, origin, actor)
      return undefined
    }
    const parsed = entry.decl.request.safeParse(env.msg ?? {})
    if (!parsed.success) {
      const issues = parsed.error.issues.map(i => `${i.path.join('.') || '(request)'}: ${i.message}`)
      this.refuse(new BadRequest(`bad request for ${env.be}: ${issues.slice(0, 5).join('; ')}`, { issues }), env, origin, actor)
      return undefined
    }
    // The deadline signal is made only if the handler asks for it (most never do).
    let signal: AbortSignal | undefined
    const call: CallInfo = { from: env.from, invoker: env.from.id, envelope: env, get signal () { return (signal ??= AbortSignal.timeout(remaining)) } }
    let value: unknown
    try {
      const handler = entry.decl.handler as (s: unknown, r: unknown, c: CallInfo) => unknown
      value = handler(entry.services, parsed.data, call)
    } catch (err) {
      this.answer(actor, env, this.failure(env, err))
      return undefined
    }
    if (isThenable(value)) {
      return Promise.resolve(value).then(
        (v) => { this.answer(actor, env, this.success(entry, env, v)) },
        (err: unknown) => { this.answer(actor, env, this.failure(env, err)) }
      ).catch((err: unknown) => { this.dispatchFailed(env, err) })
    }
    this.answer(actor, env, this.success(entry, env, value))
    return undefined
  }

  /** A handler's value checked against its own response schema. */
  private success (entry: Registered, env: Envelope, value: unknown): Reply {
    const checked = entry.decl.response.safeParse(value)
    if (checked.success) return { ok: checked.data }
    this.log.error({ be: env.be, issues: checked.error.issues.slice(0, 5) }, 'a handler returned a reply that breaks its own schema')
    return { error: new HandlerFailed(`${env.be} produced an invalid reply`).toWire() }
  }

  /** A handler's error as a reply: typed errors as they are, anything else as HandlerFailed. */
  private failure (env: Envelope, err: unknown): Reply {
    if (!(err instanceof DmsError)) this.log.warn({ be: env.be, err }, 'handler failed')
    return { error: toWireError(err) }
  }

  private answer (actor: Actor, env: Envelope, result: Reply): void {
    if (env.cont === undefined) {
      if ('error' in result) this.log.info({ be: env.be, from: env.from.id, error: result.error }, 'a one-way message failed; the sender asked for no reply')
      return
    }
    this.reply(actor, env.from, env.cont, env.exp, result)
  }
}

function isThenable<T> (v: T | PromiseLike<T>): v is PromiseLike<T> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function'
}

function asReply (msg: unknown): Reply {
  if (typeof msg === 'object' && msg !== null) {
    if ('ok' in msg) return { ok: (msg as { ok: unknown }).ok }
    const e = (msg as { error?: unknown }).error
    if (typeof e === 'object' && e !== null && typeof (e as WireError).name === 'string') return { error: e as WireError }
  }
  return { error: new BadRequest('the reply is neither {ok} nor {error}').toWire() }
}

export function unwrapReply<T> (msg: unknown): T {
  const r = asReply(msg)
  if ('error' in r) throw errorFromWire(r.error)
  return r.ok as T
}
