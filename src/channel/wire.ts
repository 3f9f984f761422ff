import { z } from 'zod'
import { CHANNEL_MAX_BATCH } from './constants.js'

/**
 * The messages of the channel protocol (specs/channel.md), shared by the behaviours that carry
 * them and the service that makes and reads them. Requests are strict at the top level (the
 * dispatcher's rule); a receiver of a newer version's extra field refuses it by name.
 */

/** A channel's name: what a receiver registers a handler under. */
export const ChannelName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$/, 'a channel name is 1–128 letters, digits, . _ / or -')
const Seq = z.number().int().min(1)
const Count = z.number().int().min(0)

/** An error as it travels (`{ name, message, ...fields }`, specs/protocol.md "Replies"). */
export const WireErrorSchema = z.looseObject({ name: z.string(), message: z.string(), code: z.string().optional() })

/** A message the receiver refused (its schema, or its handler threw): the checkpoint moved past it. */
export const Refusal = z.object({ seq: Seq, error: WireErrorSchema })
export type Refusal = z.infer<typeof Refusal>

/** Handshake, sender → receiver: where the sender stands. */
export const HelloRequest = z.strictObject({
  name: ChannelName,
  /** Highest sequence number the sender has assigned (0: none yet). */
  last: Count,
  /** Highest sequence number the sender holds as acknowledged. */
  acked: Count
})
/** Where the receiver stands: the sender resumes after `checkpoint`. */
export const ChannelAck = z.object({
  /** Highest sequence number handled and committed: the cumulative ack. */
  checkpoint: Count,
  /** Refusals with a sequence number above the sender's `acked`. */
  refused: z.array(Refusal)
})
export type ChannelAck = z.infer<typeof ChannelAck>

export const DeliverRequest = z.strictObject({
  name: ChannelName,
  /** The sender's cumulative ack: refusals at or below it are not repeated in the reply. */
  acked: Count,
  msgs: z.array(z.object({ seq: Seq, msg: z.unknown() })).max(CHANNEL_MAX_BATCH)
})
export type DeliverRequest = z.infer<typeof DeliverRequest>

export const HeartbeatRequest = z.strictObject({})
export const HeartbeatResponse = z.object({})
