/**
 * Defaults of streams (specs/streams.md). Each can be overridden per node (`NodeOptions.streams`)
 * or per stream (`OpenOptions`); the reason for each value is beside it.
 */

/**
 * Bytes a reader lets the writer send ahead of what it consumed (the credit window): a few log
 * reads in flight keep the pipe full on a LAN, and a reader that stops reading holds at most this
 * much of the stream in its RAM.
 */
export const STREAM_WINDOW_BYTES = 256 * 1024
/** The smallest window a reader may ask for: below it a log chunk would not fit. */
export const STREAM_MIN_WINDOW_BYTES = 1024
/** The largest: a window is RAM the reader commits to, and must stay far under the 4 MiB frame. */
export const STREAM_MAX_WINDOW_BYTES = 2 * 1024 * 1024
/**
 * A reader re-advertises credit once it consumed this fraction of its window since the last
 * advertisement: one credit message per quarter window rather than per chunk, and the writer
 * never waits for a whole window to drain.
 */
export const STREAM_CREDIT_FRACTION = 4
/**
 * A writer that has a chunk to send and no credit for this long ends the stream (`StreamLost`,
 * reason `stalled`): a reader that is alive but stopped reading must not hold the writer's
 * resources (a log watcher, an upstream stream) forever.
 */
export const STREAM_STALL_MS = 60_000
/** Deadline of one data, credit, end or cancel call: a reply later than this means the pair is in trouble. */
export const STREAM_CALL_TIMEOUT_MS = 10_000
/** Streams open on one node at once (both ends): each holds a little RAM and maybe a watcher. */
export const STREAM_MAX_OPEN = 4_096
/** Stream ids: random, chosen by the reader; long enough not to be guessed (they address the stream). */
export const STREAM_ID_PATTERN = /^[A-Za-z0-9_-]{16,64}$/
