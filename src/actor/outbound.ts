import type { Logger } from 'pino'
import { BadRequest, Expired, FrameTooLarge, InvalidArgument, Timeout, Unauthorized, toWireError, type WireError } from '../lib/errors.js'
import { didFromPeerId, isDid, peerIdFromDid } from '../identity/did.js'
import type { Actor, CallOptions, Destination } from './actor.js'
import { DEFAULT_ENVELOPE_LIFETIME_MS, MAX_ENVELOPE_LIFETIME_MS, REPLY_PREFIX } from './constants.js'
import { decodeEnvelope, encodeEnvelope, newNonce, verifyEnvelope } from './envelope.js'
import { isThenable, type Reply } from './inbound.js'
import type { ActorObserver } from './observer.js'
import { PendingReplies } from './pending.js'
import { ROOT_INBOX, type Envelope, type FrameOrigin, type Handle, type Transport } from './types.js'
import { errorFromWire } from '../lib/errors.js'

/** What a relayed invocation (from the local API) resolves to. */
export interface RelayReply { from: Handle, reply: Reply }

export interface OutboundParts {
  peerId: string
  transport: Transport
  pending: PendingReplies
  /** Local actors by DID: a child's DID given as a destination names that child, not a node. */
  localByDid: (did: string) => Actor | undefined
  /** Local delivery: straight into the inbound pipeline (a microtask later, like a network). */
  deliverLocal: (frame: Uint8Array, origin: FrameOrigin, verified: boolean) => void
  isStopped: () => boolean
  now: () => number
  log: Logger
  /** Metrics hooks (observer.ts). */
  observer?: ActorObserver
}

/**
 * The outbound half of a node's actors: building, signing and routing envelopes for invoke, send,
 * publish and replies, and relaying envelopes signed elsewhere (the local API).
 */
export class Outbound {
  private readonly destinations = new Map<string, Handle>()

  constructor (private readonly p: OutboundParts) {}

  resolveDestination (dest: Destination): Handle {
    if (typeof dest !== 'string') return dest
    const local = this.p.localByDid(dest)
    if (local !== undefined) return local.handle
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

  /**
   * The call's deadline. One beyond the longest lifetime a receiver accepts would be refused
   * there, and the refusal's own reply refused in turn, leaving the caller waiting for nothing:
   * it is refused here, at once.
   */
  deadlineOf (opts: CallOptions, required: boolean): number {
    const now = this.p.now()
    let deadline: number
    if (opts.deadline !== undefined) {
      deadline = opts.deadline
    } else if (opts.timeout !== undefined) {
      if (!(opts.timeout > 0)) throw new InvalidArgument(`timeout must be positive, got ${opts.timeout}`)
      deadline = now + opts.timeout
    } else {
      if (required) throw new InvalidArgument('invoke needs a deadline: pass { timeout } or { deadline }')
      return now + DEFAULT_ENVELOPE_LIFETIME_MS
    }
    checkLifetime(deadline, now)
    return deadline
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
    if (this.p.isStopped() || !actor.running) throw new Timeout('the actor is stopping')
    const deadline = this.deadlineOf(opts, true)
    const to = this.resolveDestination(destination)
    const cont = PendingReplies.newCont()
    const found = this.proofsFor(actor, to, behavior, undefined, opts)
    const env: Envelope = { v: 1, to, from: actor.handle, be: behavior, nonce: newNonce(), exp: deadline, cont, msg: payload, cap: isThenable(found) ? await found : found }
    const frame = encodeEnvelope(env, actor.signer)
    const replied = this.p.pending.wait(cont, to.addr.peer, deadline, behavior, actor)
    const obs = this.p.observer
    obs?.sent(behavior, 'invoke')
    const t0 = obs === undefined ? 0 : performance.now()
    this.route(frame, to.addr.peer, deadline).catch((err: unknown) => { this.p.pending.fail(cont, err) })
    try {
      const reply = await replied
      const value = unwrapReply<T>(reply.msg)
      obs?.invoked(behavior, 'ok', (performance.now() - t0) / 1000)
      return value
    } catch (err) {
      obs?.invoked(behavior, err instanceof Error ? err.name : 'Error', (performance.now() - t0) / 1000)
      throw err
    }
  }

  async sendAs (actor: Actor, destination: Destination, behavior: string, payload: unknown, opts: CallOptions): Promise<void> {
    const deadline = this.deadlineOf(opts, false)
    const to = this.resolveDestination(destination)
    const found = this.proofsFor(actor, to, behavior, undefined, opts)
    const env: Envelope = { v: 1, to, from: actor.handle, be: behavior, nonce: newNonce(), exp: deadline, msg: payload, cap: isThenable(found) ? await found : found }
    this.p.observer?.sent(behavior, 'send')
    await this.route(encodeEnvelope(env, actor.signer), to.addr.peer, deadline)
  }

  async publishAs (actor: Actor, topic: string, behavior: string, payload: unknown, opts: CallOptions): Promise<void> {
    const deadline = this.deadlineOf(opts, false)
    const to: Handle = { id: actor.handle.id, did: actor.handle.did, addr: { peer: '*', inbox: ROOT_INBOX } }
    const found = this.proofsFor(actor, to, behavior, topic, opts)
    const env: Envelope = { v: 1, to, from: actor.handle, be: behavior, nonce: newNonce(), exp: deadline, topic, msg: payload, cap: isThenable(found) ? await found : found }
    this.p.observer?.sent(behavior, 'publish')
    await this.p.transport.publish(topic, encodeEnvelope(env, actor.signer))
  }

  /**
   * Relays an envelope signed elsewhere (the CLI, through the local API). The API adds no
   * authority: the signature is always checked, and the sender must name this node as the place
   * its replies go. For an invoke, resolves with the reply.
   */
  async relay (frame: Uint8Array, mode: 'send' | 'invoke' | 'broadcast', owner: object): Promise<RelayReply | undefined> {
    const limit = this.p.transport.maxFrameBytes
    if (frame.length > limit) throw new FrameTooLarge(`frame of ${frame.length} bytes exceeds the limit of ${limit}`, { limit, size: frame.length })
    const d = decodeEnvelope(frame)
    const env = d.envelope
    if (d.signature === undefined) throw new Unauthorized('the API relays only signed envelopes', { reason: 'unsigned' })
    if (!verifyEnvelope(d)) throw new Unauthorized('the envelope\'s signature does not verify with its sender\'s key', { reason: 'bad-signature' })
    if (env.from.addr.peer !== this.p.peerId) throw new BadRequest(`from.addr.peer must be this node (${this.p.peerId}), where replies are delivered`)
    const now = this.p.now()
    if (env.exp <= now) throw new Expired('the envelope expired before it was relayed')
    checkLifetime(env.exp, now)
    this.p.observer?.sent(env.be, 'relay')
    if (mode === 'broadcast') {
      if (env.topic === undefined) throw new BadRequest('a broadcast envelope needs a topic')
      await this.p.transport.publish(env.topic, frame)
      return undefined
    }
    if (mode === 'send') {
      await this.route(frame, env.to.addr.peer, env.exp, true)
      return undefined
    }
    if (env.cont === undefined) throw new BadRequest('an invoke envelope needs a reply-to (cont)')
    if (!env.cont.startsWith(REPLY_PREFIX)) throw new BadRequest(`a reply-to must lie under ${REPLY_PREFIX}`)
    const cont = env.cont
    const replied = this.p.pending.wait(cont, env.to.addr.peer, env.exp, env.be, owner)
    this.route(frame, env.to.addr.peer, env.exp, true).catch((err: unknown) => { this.p.pending.fail(cont, err) })
    const reply = await replied
    return { from: reply.from, reply: asReply(reply.msg) }
  }

  /** Sends a reply (or a refusal) to `to`'s continuation path. Never throws. */
  reply (actor: Actor, to: Handle, cont: string, exp: number, reply: Reply): void {
    // An error about expiry must still reach the caller: give such replies a short fresh lifetime.
    const deadline = Math.max(exp, this.p.now() + 5_000)
    const env: Envelope = { v: 1, to, from: actor.handle, be: cont, nonce: newNonce(), exp: deadline, msg: reply }
    this.p.observer?.sent('reply', 'reply')
    const limit = this.p.transport.maxFrameBytes
    let frame: Uint8Array
    try {
      frame = encodeEnvelope(env, actor.signer)
      if (frame.length > limit) {
        frame = encodeEnvelope({ ...env, msg: { error: new FrameTooLarge(`the reply of ${frame.length} bytes exceeds the frame limit of ${limit}`, { limit }).toWire() } }, actor.signer)
      }
    } catch (err) {
      // Only a bug can get here (handles and paths were checked on the way in).
      this.p.log.error({ err }, 'could not encode a reply')
      return
    }
    this.route(frame, to.addr.peer, deadline).catch((err: unknown) => {
      this.p.log.warn({ err: toWireError(err), to: to.addr.peer, cont }, 'could not deliver a reply')
    })
  }

  /** Delivers a frame: locally, or on the peer's stream, trying no longer than `deadline`. */
  private async route (frame: Uint8Array, peer: string, deadline: number, verified = false): Promise<void> {
    if (peer === this.p.peerId) {
      const limit = this.p.transport.maxFrameBytes
      if (frame.length > limit) throw new FrameTooLarge(`frame of ${frame.length} bytes exceeds the limit of ${limit}`, { limit, size: frame.length })
      queueMicrotask(() => { this.p.deliverLocal(frame, { peer, via: 'local' }, verified) })
      return
    }
    await this.p.transport.send(peer, frame, deadline)
  }
}

function checkLifetime (deadline: number, now: number): void {
  if (deadline - now > MAX_ENVELOPE_LIFETIME_MS) {
    throw new BadRequest(`a deadline more than ${MAX_ENVELOPE_LIFETIME_MS / 60_000} minutes away would be refused by the receiver; the longest is ${MAX_ENVELOPE_LIFETIME_MS} ms`, { maxLifetimeMs: MAX_ENVELOPE_LIFETIME_MS })
  }
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
