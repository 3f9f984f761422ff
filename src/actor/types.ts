import type { Did } from '../identity/did.js'

/** Where an actor lives: the libp2p peer of its node and its inbox there (`root` for the node). */
export interface ActorAddr { peer: string, inbox: string }

/**
 * `id` is the actor's own key (a DID), `did` the context that controls it, `addr` where it lives.
 * The node is the root actor: id = did = the node's DID, inbox `root`.
 */
export interface Handle { id: Did, did: Did, addr: ActorAddr }

export const ROOT_INBOX = 'root'

/** The decoded, verified header of an envelope plus its payload. */
export interface Envelope {
  v: 1
  to: Handle
  from: Handle
  /** Behaviour path to dispatch. */
  be: string
  /** Unique per sender (a random per-process prefix and a counter); the replay guard remembers it until `exp`. */
  nonce: string
  /** Expiry, unix milliseconds. */
  exp: number
  /** Reply behaviour on `from` (invoke only): the one-shot path the reply is sent to. */
  cont?: string
  /** Broadcast topic (publish only). */
  topic?: string
  /** UCAN tokens (JWTs) that prove the capability; leaf first, then its proofs. */
  cap?: string[]
  /** Payload (JSON). */
  msg: unknown
}

/** How a frame reached this node; the transport vouches for `peer` (Noise / gossipsub StrictSign). */
export interface FrameOrigin {
  /** The authenticated peer the bytes came from (for gossip: the message's original publisher). */
  peer: string
  via: 'direct' | 'gossip' | 'local'
  topic?: string
}

/**
 * A gossip validator's answer, mapped by the transport onto gossipsub's `TopicValidatorResult`:
 * `accept` delivers and forwards; `reject` drops and lowers the publisher's score (P4: a
 * malformed, forged or badly signed message); `ignore` drops without penalty (expired, replayed,
 * not for us).
 */
export type GossipVerdict = 'accept' | 'reject' | 'ignore'

/** What the actor system gives the transport to deliver inbound frames to. */
export interface FrameReceiver {
  onFrame: (frame: Uint8Array, origin: FrameOrigin) => void
  /**
   * Checks a gossip frame before the transport delivers *or forwards* it (gossipsub topic
   * validator): decode, publisher = envelope host, signature rule, expiry. Only frames it accepts
   * reach `onFrame`. Absent: every gossip frame is accepted and checked by `onFrame` alone.
   */
  validateGossip?: (frame: Uint8Array, origin: FrameOrigin) => GossipVerdict
  /**
   * A frame over the size limit: the transport skipped its bytes (the stream stays usable) and
   * hands over only its first bytes, so the receiver can read the header and answer the caller.
   */
  onOversize: (head: Uint8Array, totalLength: number, origin: FrameOrigin) => void
}

/**
 * The actor layer knows this interface, never libp2p. Implementations: the in-process transport
 * (tests, local delivery) and the libp2p one (one long-lived framed stream per peer).
 */
export interface Transport {
  readonly peerId: string
  /** Largest frame this transport sends or accepts, in bytes. */
  readonly maxFrameBytes: number
  setReceiver: (receiver: FrameReceiver) => void
  /**
   * Writes a frame on the peer's actor stream, dialling or re-dialling as needed; resolves once
   * written (waiting out backpressure). Throws `FrameTooLarge` before writing anything too big,
   * `Unreachable` when the peer cannot be reached before `deadline` (unix ms; the transport's own
   * default when absent). A deadline, not a signal: the common case — an open stream — needs no
   * timer at all, so one is made only when the frame must wait.
   */
  send: (peer: string, frame: Uint8Array, deadline?: number) => Promise<void>
  publish: (topic: string, frame: Uint8Array) => Promise<void>
  subscribe: (topic: string) => void
  unsubscribe: (topic: string) => void
}
