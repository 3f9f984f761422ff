/**
 * Defaults of the reliable channel (specs/channel.md). Each can be overridden per node
 * (`NodeOptions.channels`) or per channel (`ChannelOptions`); the reason for each value is beside it.
 */

/** Messages sent and not yet acknowledged, at most: a slow receiver holds at most this many of the sender's messages in RAM (issue 8). */
export const CHANNEL_WINDOW = 256
/**
 * Unacknowledged messages a channel keeps in its outbox on disk before `send` waits: the disk,
 * not RAM, absorbs a receiver that is away; beyond the window the messages live only on disk.
 */
export const CHANNEL_OUTBOX_LIMIT = 100_000
/** Sends waiting for room in a full outbox before `send` fails with `Overloaded`: what RAM holds beyond the window. */
export const CHANNEL_MAX_QUEUED_SENDS = 1_024
/** Messages per deliver envelope: big enough to amortise an envelope per message, small enough to keep a frame well under 4 MiB. */
export const CHANNEL_MAX_BATCH = 64
/** Payload bytes per deliver envelope (JSON length): a quarter of the default 4 MiB frame limit. */
export const CHANNEL_MAX_BATCH_BYTES = 1024 * 1024
/** Largest single message (JSON length): it must fit one deliver envelope. */
export const CHANNEL_MAX_MESSAGE_BYTES = CHANNEL_MAX_BATCH_BYTES
/**
 * Deliver envelopes of one channel outstanding at once: enough to keep the pipe full while the
 * receiver handles and fsyncs one group (smaller batches when sends trickle in); 8 measured
 * 20k msgs/s streaming against 14k with 4 (`npm run bench:channel`).
 */
export const CHANNEL_MAX_DELIVERS_IN_FLIGHT = 8
/** Deadline of a deliver or hello invoke: long enough for the receiver to handle a batch, short enough to notice a lost reply soon. */
export const CHANNEL_CALL_TIMEOUT_MS = 10_000
/**
 * How long a receiver holds a deliver's reply waiting for its messages to be handled: the reply
 * is the cumulative ack, so it should say "handled"; a blocked handler must not hold the
 * sender's call (and a mailbox slot) to its deadline.
 */
export const CHANNEL_ACK_WAIT_MS = 2_000
/** First retransmission timeout; doubles while nothing is acknowledged, up to the max (no tight loops against a dead or stuck receiver). */
export const CHANNEL_RTO_MS = 500
export const CHANNEL_RTO_MAX_MS = 10_000
/** Heartbeat period and misses before a peer is `disconnected` (detection within interval × misses). */
export const CHANNEL_HEARTBEAT_MS = 2_000
export const CHANNEL_HEARTBEAT_MISSES = 3
/** Refusals a receiver remembers per channel, so a sender whose reply was lost still learns why on the next hello or deliver. */
export const CHANNEL_REFUSALS_KEPT = 64
/** Sequence numbers are written zero-padded in level keys so that key order is sequence order. */
export const SEQ_DIGITS = 16
/**
 * Messages a receiver commits in one level batch at most: one fsync (~0.25 ms here) for a whole
 * deliver's worth of messages instead of one per message.
 */
export const CHANNEL_COMMIT_GROUP = 64
