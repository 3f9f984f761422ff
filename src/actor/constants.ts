/** Envelope lifetime when the caller sets no deadline (ARCHITECTURE.md defaults). */
export const DEFAULT_ENVELOPE_LIFETIME_MS = 30_000
/**
 * Longest lifetime accepted on an inbound envelope. Bounds the replay seen-set: a nonce needs
 * remembering only until its envelope expires, so this caps how long any entry lives.
 */
export const MAX_ENVELOPE_LIFETIME_MS = 10 * 60_000
/** Clock skew tolerated between nodes when checking expiry of inbound envelopes. */
export const CLOCK_SKEW_MS = 0
/** Mailbox: handlers running at once per actor, and envelopes waiting beyond that. */
export const MAILBOX_CONCURRENCY = 256
export const MAILBOX_CAPACITY = 4096
/**
 * Envelopes of one connected peer that passed the checks and are not yet answered (running,
 * waiting in a mailbox, awaiting a capability chain), across all of a node's actors. Checked
 * before any signature or chain is verified; beyond it the peer is answered Overloaded at once
 * (retry hint PEER_INFLIGHT_RETRY_MS), so one peer can hold at most this much of the node's work
 * and of a mailbox's capacity (MAILBOX_CAPACITY / 4): the others still get in. Quick handlers
 * never come near it (each is answered in the turn it arrived in); slow ones do.
 */
export const PEER_INFLIGHT_MAX = 1024
/** The retry hint of that refusal: long enough for a mailbox's worth of quick jobs to be answered. */
export const PEER_INFLIGHT_RETRY_MS = 100
/**
 * Per-sender token bucket (envelopes/s, burst). Generous: a node invoking another over one stream
 * reaches ~10k round trips/s here; the limit exists to stop one sender starving the others.
 */
export const PER_SENDER_RATE = 20_000
export const PER_SENDER_BURST = 20_000
/**
 * Envelopes remembered for replay detection at once (by sender and nonce, each until its expiry).
 * Past this the node refuses envelopes that need remembering with Overloaded instead of growing:
 * ~100 bytes each, so ~20 MB at the bound; it holds e.g. 6,600 signed envelopes/s of 30 s lifetime.
 * A host's own envelopes on its direct stream (most node-to-node traffic) are never remembered.
 */
export const REPLAY_MAX_ENTRIES = 200_000
/** Senders tracked by the limiter; the least recently seen are forgotten beyond this. */
export const LIMITER_MAX_SENDERS = 10_000
/** One-shot reply behaviours live under this prefix, one per outstanding invoke. */
export const REPLY_PREFIX = '/dms/reply/'
