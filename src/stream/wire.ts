import { z } from 'zod'
import { WireErrorSchema } from '../channel/wire.js'
import { STREAM_ID_PATTERN, STREAM_MAX_WINDOW_BYTES, STREAM_MIN_WINDOW_BYTES } from './constants.js'

/**
 * The messages of the stream protocol (specs/streams.md). A stream is opened by invoking a
 * behaviour that accepts one (its request carries `open`); the rest travel between the two
 * nodes' root actors, addressed by (the other node, stream id).
 */

export const StreamId = z.string().regex(STREAM_ID_PATTERN, 'a stream id is 16–64 letters, digits, _ or -')

/** The `open` field of an accepting behaviour's request: which stream, and the reader's first credit. */
export const StreamOpen = z.strictObject({
  id: StreamId,
  /** Bytes (JSON of the chunks) the writer may send before the reader grants more. */
  window: z.number().int().min(STREAM_MIN_WINDOW_BYTES).max(STREAM_MAX_WINDOW_BYTES)
})
export type StreamOpen = z.infer<typeof StreamOpen>

/** What an accepting behaviour answers: the stream is open, chunks follow. */
export const StreamAccepted = z.object({ id: StreamId })

/** Writer → reader: the chunk numbered `seq` (1, 2, …). */
export const DataRequest = z.strictObject({ id: StreamId, seq: z.number().int().min(1), chunk: z.unknown() })
/** The reader's credit as it stands: the writer may have sent this many bytes in all. */
export const CreditReply = z.object({ credit: z.number().int().min(0) })
/** Reader → writer: more credit (cumulative: a lost or late one is overtaken by the next). */
export const CreditRequest = z.strictObject({ id: StreamId, credit: z.number().int().min(0) })
/** Writer → reader: no chunk after `seq`; `info` for the reader (a log stream: where it ended). */
export const EndRequest = z.strictObject({ id: StreamId, seq: z.number().int().min(0), info: z.unknown().optional() })
/**
 * Either side → the other: the stream is over. `to` names the end addressed (a node streaming to
 * itself holds both ends under one id); `error`, from a writer, is what made it give up.
 */
export const CancelRequest = z.strictObject({
  id: StreamId,
  to: z.enum(['reader', 'writer']),
  reason: z.string().max(1_000),
  error: WireErrorSchema.optional()
})
export const Empty = z.object({})
