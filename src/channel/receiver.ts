import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import type { z } from 'zod'
import type { Handle } from '../actor/types.js'
import { BadRequest, DmsError, toWireError } from '../lib/errors.js'
import type { JsonSublevel } from '../services/store.js'
import type { Db } from '../store/db.js'
import { CHANNEL_REFUSALS_KEPT } from './constants.js'
import type { ChannelAck, Refusal } from './wire.js'

/**
 * Level operations a handler adds to the batch the channel commits with its checkpoint: the
 * handler's effects and "handled up to seq" land together or not at all. A list rather than a
 * level chained batch, so that a handler that throws leaves nothing behind (a chained batch
 * cannot take back what was put in it).
 */
export interface ChannelBatch {
  put: (sublevel: JsonSublevel, key: string, value: unknown) => void
  del: (sublevel: JsonSublevel, key: string) => void
}

export interface ReceiveContext {
  seq: number
  /** The sending actor (authenticated: host or signature, and authorized for the channel). */
  from: Handle
  batch: ChannelBatch
  /** A sublevel of the node's db for this channel name's handler state (read it here, write through `batch`). */
  store: JsonSublevel
}

export type ChannelHandler = (msg: unknown, ctx: ReceiveContext) => Promise<void> | void

export interface ReceiverRegistration {
  handler: ChannelHandler
  /** Each message is parsed with it first; a message it refuses is a `BadRequest` refusal. */
  schema?: z.ZodType
  store: JsonSublevel
}

type Op = { type: 'put', sublevel: JsonSublevel, key: string, value: unknown } | { type: 'del', sublevel: JsonSublevel, key: string }

interface CheckpointRecord { checkpoint: number, refused: Refusal[] }

export interface ReceiverParts {
  key: string
  from: Handle
  name: string
  db: Db
  checkpoints: JsonSublevel
  registration: () => ReceiverRegistration | undefined
  /** Messages committed together at most (1: every message alone, for a handler that reads back what the previous one wrote). */
  group: number
  /** fsync each commit (the checkpoint survives a machine crash, not only a process crash). */
  sync: boolean
  log: Logger
}

/**
 * The receiving end of one channel (one sender actor, one name). Messages are queued in order
 * and handled one at a time; each handler's operations are committed in one level batch with the
 * new checkpoint. A duplicate (at or below what is queued) is not queued again; a gap is not
 * queued at all (the sender goes back to its ack and sends again).
 */
export class ChannelReceiver {
  checkpoint = 0
  /** Highest sequence number queued (contiguous from the checkpoint); lost with the process. */
  private received = 0
  private refused: Refusal[] = []
  private readonly queue: Array<{ seq: number, msg: unknown }> = []
  private processing = false
  private stopped = false
  private readonly waiters: Array<{ seq: number, resolve: () => void }> = []
  duplicates = 0
  gaps = 0
  handled = 0
  private readonly loaded: Promise<void>
  lastFrom: Handle

  constructor (private readonly p: ReceiverParts) {
    this.lastFrom = p.from
    this.loaded = this.load()
  }

  private async load (): Promise<void> {
    const rec = await this.p.checkpoints.get(this.p.key) as CheckpointRecord | undefined
    if (rec !== undefined) {
      this.checkpoint = rec.checkpoint
      this.refused = rec.refused
    }
    this.received = this.checkpoint
  }

  async ready (): Promise<void> { await this.loaded }

  /** The cumulative ack, and the refusals the sender has not acknowledged. */
  ack (senderAcked: number): ChannelAck {
    return { checkpoint: this.checkpoint, refused: this.refused.filter(r => r.seq > senderAcked) }
  }

  /**
   * Handshake: the sender's last assigned and acknowledged numbers. A sender that acknowledged
   * more than this receiver handled means this receiver lost its state (a restored data dir): the
   * sender no longer holds those messages, so the receiver moves on rather than wait forever.
   */
  async hello (acked: number): Promise<void> {
    await this.loaded
    if (acked > this.checkpoint) {
      this.p.log.warn({ channel: this.p.key, acked, checkpoint: this.checkpoint }, 'the sender acknowledged more than this receiver handled: its state was lost; moving on')
      await this.commit(acked, [], [])
    }
  }

  /** Queues what follows in order; resolves the highest sequence number of `msgs` that is queued or handled. */
  accept (msgs: ReadonlyArray<{ seq: number, msg: unknown }>): number {
    let top = 0
    for (const m of [...msgs].sort((a, b) => a.seq - b.seq)) {
      if (m.seq <= this.received) {
        this.duplicates++
        top = m.seq
      } else if (m.seq === this.received + 1) {
        this.queue.push(m)
        this.received = m.seq
        top = m.seq
      } else {
        this.gaps++
        break
      }
    }
    this.process()
    return top
  }

  /** Resolves once `seq` is handled, or after `ms` (whichever first). */
  async handledBy (seq: number, ms: number): Promise<void> {
    if (this.checkpoint >= seq || this.stopped) return
    await new Promise<void>(resolve => {
      const w = { seq, resolve: () => { clearTimeout(t); resolve() } }
      const t = setTimeout(() => {
        const i = this.waiters.indexOf(w)
        if (i >= 0) this.waiters.splice(i, 1)
        resolve()
      }, ms)
      this.waiters.push(w)
    })
  }

  stop (): void {
    this.stopped = true
    for (const w of this.waiters.splice(0)) w.resolve()
  }

  private process (): void {
    if (this.processing || this.stopped) return
    this.processing = true
    void this.drain().finally(() => { this.processing = false })
  }

  /**
   * Handles what is queued, in order, committing a group of messages in one level batch with the
   * checkpoint of its last (one fsync for many messages: the receiver's throughput is the
   * batch's, not the disk's). Each handler's operations are its own: a handler that throws
   * leaves nothing, and its message is refused. A crash before the commit loses the whole
   * group's effects and checkpoint together, and the sender sends the group again.
   */
  private async drain (): Promise<void> {
    await this.loaded
    while (this.queue.length > 0 && !this.stopped) {
      const reg = this.p.registration()
      if (reg === undefined) {
        // the handler was removed: forget the queue, the sender sends again
        this.requeueFromCheckpoint()
        return
      }
      const group = this.queue.slice(0, this.p.group)
      const ops: Op[] = []
      const refusals: Refusal[] = []
      for (const m of group) {
        const mine: Op[] = []
        try {
          const msg = reg.schema === undefined ? m.msg : parseWith(reg.schema, m.msg)
          const batch: ChannelBatch = {
            put: (sublevel, key, value) => { mine.push({ type: 'put', sublevel, key, value }) },
            del: (sublevel, key) => { mine.push({ type: 'del', sublevel, key }) }
          }
          await reg.handler(msg, { seq: m.seq, from: this.lastFrom, batch, store: reg.store })
          ops.push(...mine)
        } catch (err) {
          const errorId = err instanceof DmsError ? undefined : randomUUID()
          if (errorId !== undefined) this.p.log.error({ err, errorId, channel: this.p.key, seq: m.seq }, 'channel handler failed')
          refusals.push({ seq: m.seq, error: toWireError(err, errorId) })
        }
        if (this.stopped) return
      }
      try {
        await this.commit(group[group.length - 1].seq, ops, refusals)
      } catch (err) {
        // the db is closing (node stop) or failing: nothing of this group is kept; the sender sends again
        this.p.log.warn({ err, channel: this.p.key }, 'could not commit a channel checkpoint')
        this.requeueFromCheckpoint()
        return
      }
      this.queue.splice(0, group.length)
      this.handled += group.length
    }
  }

  private requeueFromCheckpoint (): void {
    this.queue.length = 0
    this.received = this.checkpoint
  }

  private async commit (seq: number, ops: Op[], refusals: Refusal[]): Promise<void> {
    const refused = refusals.length === 0 ? this.refused : [...this.refused, ...refusals].slice(-CHANNEL_REFUSALS_KEPT)
    const record: CheckpointRecord = { checkpoint: seq, refused }
    const all: Op[] = [...ops, { type: 'put', sublevel: this.p.checkpoints, key: this.p.key, value: record }]
    await this.p.db.batch(all, { sync: this.p.sync })
    this.checkpoint = seq
    this.refused = refused
    if (this.received < seq) this.received = seq
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      if (this.waiters[i].seq <= seq) this.waiters.splice(i, 1)[0].resolve()
    }
  }
}

function parseWith (schema: z.ZodType, msg: unknown): unknown {
  const r = schema.safeParse(msg)
  if (!r.success) throw new BadRequest(`the message does not match the channel's schema: ${r.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
  return r.data
}
