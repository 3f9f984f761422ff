import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import {
  BadRequest, DmsError, Expired, FrameTooLarge, HandlerFailed, NotRunning, Overloaded, Replayed,
  Unauthorized, UnknownBehavior, toWireError, type WireError
} from '../lib/errors.js'
import { didFromPeerId } from '../identity/did.js'
import type { AuthorizeRequest } from '../security/authorizer.js'
import type { Actor } from './actor.js'
import type { ActorObserver } from './observer.js'
import type { CallInfo } from './behavior.js'
import { MAX_ENVELOPE_LIFETIME_MS, PEER_INFLIGHT_RETRY_MS, REPLY_PREFIX } from './constants.js'
import { decodeEnvelope, peekHeader, verifyEnvelope, type DecodedEnvelope, type Header } from './envelope.js'
import type { RateLimiter } from './limiter.js'
import type { PendingReplies } from './pending.js'
import { nearestPath, type Registered } from './registry.js'
import type { ReplayGuard } from './replay.js'
import { ROOT_INBOX, type Envelope, type FrameOrigin, type GossipVerdict, type Handle } from './types.js'

/** A reply on the wire: exactly one of `ok` or `error`. */
export type Reply = { ok: unknown } | { error: WireError }

/** Counters of what the dispatcher refused or could not answer; exposed for status and tests. */
export interface DispatchStats {
  received: number
  refused: Record<string, number>
  /** Frames that could not be answered (no header, no reply-to, or a broadcast): logged, counted. */
  unanswerable: number
  lateReplies: number
  /** Gossip frames the validator refused (not delivered, not forwarded), by verdict. */
  gossipRejected: number
  gossipIgnored: number
}

export interface InboundParts {
  /** This node's PeerId and DID. */
  peerId: string
  nodeDid: string
  maxFrameBytes: () => number
  actors: ReadonlyMap<string, Actor>
  pending: PendingReplies
  replay: ReplayGuard
  /** Frames per connected peer, taken before any verification. */
  peerLimiter: RateLimiter
  /** Envelopes per signing sender (and per behaviour), taken once the sender is authenticated. */
  senderLimiter: RateLimiter
  /** Envelopes of one connected peer admitted and not yet answered, at most (PEER_INFLIGHT_MAX). */
  peerInflight: number
  /** Sends a reply envelope (the outbound half). */
  reply: (actor: Actor, to: Handle, cont: string, exp: number, reply: Reply) => void
  stats: DispatchStats
  now: () => number
  log: Logger
  /** Metrics hooks (observer.ts); absent in most tests. */
  observer?: ActorObserver
}

/** The outcome of the checks every envelope passes before dispatch. */
type Checked = { env: Envelope } | { refusal: DmsError, header: Header | undefined, verdict: GossipVerdict }

/**
 * The inbound pipeline of one node's actors. A frame goes through, in this order:
 *
 *   decode → host claim → (a reply: match it to a waiting call) → per-peer rate limit →
 *   per-peer in-flight bound → signature → expiry → replay → actor and behaviour exist →
 *   capability → per-sender rate limit → mailbox (fair across peers) → request schema → handler →
 *   reply.
 *
 * Every refusal of an envelope with a reply-to is answered with a typed error at once. Nothing
 * yields to the event loop unless it must wait (a cold capability chain, a full mailbox, a
 * handler's promise), so a quick request is answered in the turn it arrived in. Gossip frames pass
 * the same checks in `validateGossip` before gossipsub delivers or forwards them.
 */
export class Inbound {
  private stopped = false
  /** Gossip frames the validator accepted, with their envelope: dispatch does not decode them twice. */
  private readonly validated = new WeakMap<Uint8Array, Envelope>()
  private readonly peerDids = new Map<string, string>()
  /** Per connected peer: its envelopes past the checks and not yet answered (running, queued, awaiting a chain). */
  private readonly inflight = new Map<string, number>()
  /** The peer each counted envelope is charged to, until it is answered or refused. */
  private readonly charged = new WeakMap<object, string>()

  constructor (private readonly p: InboundParts) {}

  stop (): void { this.stopped = true }

  /** `verified`: the signature was already checked (frames relayed from the API). */
  onFrame (frame: Uint8Array, origin: FrameOrigin, verified: boolean): void {
    if (this.stopped) return
    this.p.stats.received++
    const env = (origin.via === 'gossip' ? this.validated.get(frame) : undefined) ?? this.check(frame, origin, verified)
    if (env === undefined) return
    if (origin.via === 'gossip') this.validated.delete(frame)
    else if (origin.via === 'direct' && !env.be.startsWith(REPLY_PREFIX)) this.charge(env, origin.peer)
    this.dispatch(env, origin)
  }

  /** A frame over the size limit, of which the transport kept the head: answer from its header. */
  onOversize (head: Uint8Array, total: number, origin: FrameOrigin): void {
    this.p.stats.received++
    const limit = this.p.maxFrameBytes()
    this.refuse(new FrameTooLarge(`frame of ${total} bytes exceeds this node's limit of ${limit}`, { limit, size: total }), peekHeader(head), origin)
  }

  /**
   * The gossipsub topic validator: the checks of `check` without answering anyone. `reject` (the
   * publisher's score drops, nothing is forwarded) for what no honest node sends — malformed,
   * forged, unsigned where a signature is due, an expiry beyond the maximum, a behaviour that is not
   * this topic's; `ignore` for what an honest node may send late or twice — expired, replayed, a
   * behaviour this node does not know (another version), a full replay set.
   */
  validateGossip (frame: Uint8Array, origin: FrameOrigin): GossipVerdict {
    if (this.stopped) return 'ignore'
    const c = this.checks(frame, origin, false)
    if ('refusal' in c) {
      if (c.verdict === 'reject') this.p.stats.gossipRejected++; else this.p.stats.gossipIgnored++
      this.p.log.debug({ err: c.refusal.toWire(), from: origin.peer, topic: origin.topic, verdict: c.verdict }, 'gossip refused')
      return c.verdict
    }
    const entry = this.p.actors.get(ROOT_INBOX)?.registry.get(c.env.be)
    if (entry === undefined) { this.p.stats.gossipIgnored++; return 'ignore' }
    if (entry.decl.topic !== origin.topic || c.env.topic !== origin.topic) { this.p.stats.gossipRejected++; return 'reject' }
    const gossipCheck = entry.decl.gossipCheck as ((s: unknown, r: unknown, from: Handle) => GossipVerdict) | undefined
    if (gossipCheck !== undefined) {
      const parsed = entry.decl.request.safeParse(c.env.msg ?? {})
      let verdict: GossipVerdict = 'reject'
      if (parsed.success) {
        try { verdict = gossipCheck(entry.services, parsed.data, c.env.from) } catch (err) { this.dispatchFailed(c.env, err); verdict = 'ignore' }
      }
      if (verdict !== 'accept') {
        if (verdict === 'reject') this.p.stats.gossipRejected++; else this.p.stats.gossipIgnored++
        return verdict
      }
    }
    this.validated.set(frame, c.env)
    return 'accept'
  }

  /** Runs the checks and answers a refusal; the envelope when it passed. */
  private check (frame: Uint8Array, origin: FrameOrigin, verified: boolean): Envelope | undefined {
    const c = this.checks(frame, origin, verified)
    if ('env' in c) return c.env
    this.refuse(c.refusal, c.header, origin)
    return undefined
  }

  /** Everything up to (and including) replay; replies are matched here, before any verification. */
  private checks (frame: Uint8Array, origin: FrameOrigin, verified: boolean): Checked {
    let d: DecodedEnvelope
    try {
      d = decodeEnvelope(frame)
    } catch (err) {
      return { refusal: err as DmsError, header: peekHeader(frame), verdict: 'reject' }
    }
    const env = d.envelope
    // Host claim: the sender says its replies go to the peer the bytes came from. A frame
    // claiming another host is refused and answered on the connection it actually came on.
    if (env.from.addr.peer !== origin.peer) {
      return { refusal: new Unauthorized(`the envelope claims host ${env.from.addr.peer} but came from ${origin.peer}`, { reason: 'host-mismatch' }), header: env, verdict: 'reject' }
    }
    // A reply that no call awaits from this peer costs nothing more (and gets no answer).
    if (env.be.startsWith(REPLY_PREFIX) && !this.p.pending.awaits(env.be, origin.peer)) {
      return { refusal: new LateReply(), header: undefined, verdict: 'ignore' }
    }
    // Before any signature or chain is verified, the connected peer pays for the frame: a sender
    // rotating keys costs nothing, a connection does. Local frames (this node, its API) are
    // limited per sender once authenticated.
    if (origin.via !== 'local' && !env.be.startsWith(REPLY_PREFIX) && !this.p.peerLimiter.take(origin.peer)) {
      return { refusal: new Overloaded(`too many envelopes from peer ${origin.peer}; slow down`, { retryAfterMs: 1000 }), header: env, verdict: 'ignore' }
    }
    // Also before any verification: a peer with this many envelopes admitted and unanswered gets
    // no more work done for it until some are answered, whatever it sends meanwhile.
    if (origin.via === 'direct' && !env.be.startsWith(REPLY_PREFIX) && (this.inflight.get(origin.peer) ?? 0) >= this.p.peerInflight) {
      return { refusal: new Overloaded(`peer ${origin.peer} has ${this.p.peerInflight} envelopes waiting for their answer here; wait for some before sending more`, { retryAfterMs: PEER_INFLIGHT_RETRY_MS }), header: env, verdict: 'ignore' }
    }
    // Signature: the transport already authenticated the connected host (Noise, or gossipsub's
    // StrictSign), so an envelope from that same host's key needs no signature of its own, nor a
    // second check of one it carries. Anything else — a user's key, a child actor's, anything
    // relayed — must be signed, and is verified.
    const hostDid = origin.via === 'local' ? this.p.nodeDid : this.didOfPeer(origin.peer)
    if (!verified && env.from.id !== hostDid) {
      if (d.signature === undefined) {
        return { refusal: new Unauthorized(`an envelope from ${env.from.id} must be signed: only the connected host's own envelopes travel unsigned`, { reason: 'unsigned' }), header: env, verdict: 'reject' }
      }
      if (!verifyEnvelope(d)) {
        return { refusal: new Unauthorized('the envelope\'s signature does not verify with its sender\'s key', { reason: 'bad-signature' }), header: env, verdict: 'reject' }
      }
    }
    const now = this.p.now()
    if (env.exp <= now) return { refusal: new Expired(`the envelope expired ${now - env.exp} ms ago`, { exp: env.exp }), header: env, verdict: 'ignore' }
    if (env.exp > now + MAX_ENVELOPE_LIFETIME_MS) {
      return { refusal: new BadRequest(`the envelope's expiry is more than ${MAX_ENVELOPE_LIFETIME_MS} ms away`, { maxLifetimeMs: MAX_ENVELOPE_LIFETIME_MS }), header: env, verdict: 'reject' }
    }
    // Replay: a host's own envelope on its direct stream cannot be replayed by anyone else (Noise
    // numbers and authenticates every message of the session, and an envelope in the host's name
    // on any other channel is refused above as unsigned), so only the other envelopes — signed
    // ones, relayed ones, gossip (which a peer may forward again later) — need remembering.
    if (!(origin.via === 'direct' && env.from.id === hostDid)) {
      const seen = this.p.replay.check(env.from.id, env.nonce, env.exp)
      if (seen === 'replayed') return { refusal: new Replayed('this envelope (sender and nonce) was already received'), header: env, verdict: 'ignore' }
      if (seen === 'full') return { refusal: new Overloaded('this node remembers too many recent envelopes to accept more now', { retryAfterMs: 1000 }), header: env, verdict: 'ignore' }
    }
    return { env }
  }

  /** Replies go to the call that waits for them; everything else to an actor's behaviour. */
  private dispatch (env: Envelope, origin: FrameOrigin): void {
    if (env.be.startsWith(REPLY_PREFIX)) {
      if (!this.p.pending.deliver(env.be, origin.peer, env)) this.lateReply(env, origin)
      return
    }
    if (origin.via !== 'gossip' && env.to.addr.peer !== this.p.peerId) {
      this.refuse(new BadRequest(`the envelope is addressed to ${env.to.addr.peer}, not this node`), env, origin)
      return
    }
    const actor = this.p.actors.get(origin.via === 'gossip' ? ROOT_INBOX : env.to.addr.inbox)
    if (actor === undefined) {
      this.refuse(new UnknownBehavior(`no actor with inbox '${env.to.addr.inbox}' on this node`, { inbox: env.to.addr.inbox }), env, origin)
      return
    }
    const entry = actor.registry.get(env.be)
    if (entry === undefined) {
      const near = origin.via === 'gossip' ? undefined : nearestPath(env.be, actor.registry.keys())
      this.refuse(new UnknownBehavior(`no behaviour ${env.be} on this actor${near !== undefined ? `; did you mean ${near}?` : ''}`, { behavior: env.be, ...(near !== undefined ? { suggestion: near } : {}) }), env, origin, actor)
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

  private lateReply (env: Envelope, origin: FrameOrigin): void {
    this.p.stats.lateReplies++
    this.p.log.debug({ be: env.be, from: origin.peer }, 'a reply that no one awaits (late, or not from the invoked peer)')
  }

  /**
   * Capability check, then admission. Synchronous when the answer needs no verification (no
   * capability required, the actor itself, its controller, a root, a cached chain): a synchronous
   * handler's reply then leaves in the same turn as the request arrived.
   */
  private authorize (actor: Actor, entry: Registered, env: Envelope, origin: FrameOrigin): void {
    const capability = entry.capability
    // An actor may always call itself; a child actor obeys the context that controls it.
    const obs = this.p.observer
    if (capability === null || env.from.id === actor.identity.did || (actor.inbox !== ROOT_INBOX && env.from.id === actor.handle.did)) {
      obs?.capability(capability === null ? 'public' : 'self')
      this.admit(actor, entry, env, origin)
      return
    }
    const req: AuthorizeRequest = { invoker: env.from.id, audience: actor.identity.did, capability, topic: env.topic, proofs: env.cap ?? [], now: this.p.now() }
    if (actor.authorizer.allowsNow?.(req) === true) {
      obs?.capability('cached')
      this.admit(actor, entry, env, origin)
      return
    }
    actor.authorizer.authorize(req).then(() => {
      obs?.capability('cold')
      this.admit(actor, entry, env, origin)
    }, (err: unknown) => {
      const refusal = err instanceof DmsError ? err : new Unauthorized(String(err), { reason: 'error' })
      obs?.capability('refused', typeof refusal.fields.reason === 'string' ? refusal.fields.reason : refusal.name)
      this.refuse(refusal, env, origin, actor)
    }).catch((err: unknown) => { this.dispatchFailed(env, err) })
  }

  /** Rate limits per sender (and per behaviour), then the actor's mailbox. */
  private admit (actor: Actor, entry: Registered, env: Envelope, origin: FrameOrigin): void {
    const limits = entry.decl.limits
    const limiter = this.p.senderLimiter
    if (!limiter.take(env.from.id) || (limits?.perSenderPerSec !== undefined && !limiter.take(`${env.be}\u0000${env.from.id}`, limits.perSenderPerSec, limits.burst ?? limits.perSenderPerSec))) {
      this.refuse(new Overloaded(`too many envelopes from ${env.from.id}; slow down`, { retryAfterMs: 1000 }), env, origin, actor)
      return
    }
    const refuse = (err: DmsError): void => { this.refuse(err, env, origin, actor) }
    const job = (): Promise<void> | undefined => this.runHandler(actor, entry, env, origin)
    // Waiting jobs queue per connected peer (a local sender: per key), served round-robin.
    const key = origin.via === 'local' ? `local\u0000${env.from.id}` : origin.peer
    const admitted = entry.decl.readOnly === true ? actor.mailbox.admitReader(job) : actor.mailbox.admit(job, refuse, key)
    if (admitted !== 'ok') this.p.observer?.mailboxRefused(actor.kind, admitted)
    if (admitted === 'full') {
      const { running, queued } = actor.mailbox.depth
      refuse(new Overloaded(`the mailbox of ${actor.inbox} is full (${running} running, ${queued} queued)`, { retryAfterMs: 100 }))
    } else if (admitted === 'closed') {
      refuse(new NotRunning(`actor ${actor.inbox} is stopping`))
    }
  }

  /** Runs the handler; returns a promise only when the handler itself returned one. */
  private runHandler (actor: Actor, entry: Registered, env: Envelope, origin: FrameOrigin): Promise<void> | undefined {
    const remaining = env.exp - this.p.now()
    if (remaining <= 0) {
      this.refuse(new Expired('the envelope expired while waiting in the mailbox', { exp: env.exp }), env, origin, actor)
      return undefined
    }
    const parsed = entry.request.safeParse(env.msg ?? {})
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
    const errorId = randomUUID()
    this.p.log.error({ errorId, be: env.be, issues: checked.error.issues.slice(0, 5) }, 'a handler returned a reply that breaks its own schema')
    return { error: new HandlerFailed(`${env.be} produced an invalid reply; the node logged it under error id ${errorId}`, { errorId }).toWire() }
  }

  /**
   * A handler's error as a reply: typed errors as they are; anything else is a bug whose text may
   * hold internals (paths, addresses, other callers' data), so the caller gets `HandlerFailed`
   * with an error id and the node logs the detail under that id.
   */
  private failure (env: Envelope, err: unknown): Reply {
    if (err instanceof DmsError) return { error: err.toWire() }
    const errorId = randomUUID()
    this.p.log.warn({ errorId, be: env.be, from: env.from.id, err }, 'handler failed')
    return { error: toWireError(err, errorId) }
  }

  private answer (actor: Actor, env: Envelope, result: Reply): void {
    this.release(env)
    this.p.observer?.handled(env.be, 'error' in result ? result.error.name : 'ok', actor.kind)
    if (env.cont === undefined) {
      if ('error' in result) this.p.log.info({ be: env.be, from: env.from.id, error: result.error }, 'a one-way message failed; the sender asked for no reply')
      return
    }
    this.p.reply(actor, env.from, env.cont, env.exp, result)
  }

  private refuse (err: DmsError, header: Header | undefined, origin: FrameOrigin, replier?: Actor): void {
    if (err instanceof LateReply) { this.p.stats.lateReplies++; return }
    if (header !== undefined) this.release(header)
    this.p.stats.refused[err.name] = (this.p.stats.refused[err.name] ?? 0) + 1
    this.p.observer?.handled(header?.be, err.name, replier?.kind ?? 'none')
    if (header?.cont === undefined || origin.via === 'gossip') {
      this.p.stats.unanswerable++
      this.p.log.debug({ err: err.toWire(), from: origin.peer, be: header?.be, via: origin.via }, 'refused an envelope that has no reply-to')
      return
    }
    // Answer the connection the frame came on, whatever peer the envelope claims.
    const to: Handle = { ...header.from, addr: { peer: origin.peer, inbox: header.from.addr.inbox } }
    this.p.reply(replier ?? this.p.actors.get(header.to.addr.inbox) ?? this.p.actors.get(ROOT_INBOX) as Actor, to, header.cont, header.exp, { error: err.toWire() })
  }

  /**
   * A bug past the point where a refusal could be sent: logged, never an unhandled rejection
   * (which would stop the daemon) nor a throw into the transport's read loop.
   */
  dispatchFailed (env: Envelope | undefined, err: unknown): void {
    if (env !== undefined) this.release(env)
    this.p.log.error({ err, be: env?.be, from: env?.from.id }, 'dispatch failed')
  }

  /** Counts an envelope against its peer's in-flight bound until `release`. */
  private charge (env: Envelope, peer: string): void {
    this.charged.set(env, peer)
    this.inflight.set(peer, (this.inflight.get(peer) ?? 0) + 1)
  }

  /** The envelope was answered or refused (or failed): its peer may send one more. Idempotent. */
  private release (env: object): void {
    const peer = this.charged.get(env)
    if (peer === undefined) return
    this.charged.delete(env)
    const n = (this.inflight.get(peer) ?? 1) - 1
    if (n <= 0) this.inflight.delete(peer); else this.inflight.set(peer, n)
  }

  /** Envelopes of `peer` admitted and not yet answered (diagnostics and tests). */
  inflightOf (peer: string): number { return this.inflight.get(peer) ?? 0 }

  private didOfPeer (peer: string): string | undefined {
    let did = this.peerDids.get(peer)
    if (did === undefined) {
      try { did = didFromPeerId(peer) } catch { return undefined }
      if (this.peerDids.size > 10_000) this.peerDids.clear()
      this.peerDids.set(peer, did)
    }
    return did
  }
}

/** Internal marker: a reply no call awaits (counted, never answered). */
class LateReply extends DmsError {
  constructor () { super('a reply that no one awaits', 'LATE_REPLY') }
}

export function isThenable<T> (v: T | PromiseLike<T>): v is PromiseLike<T> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function'
}
