import type { Logger } from 'pino'
import type { Actor } from '../actor/actor.js'
import type { Handle } from '../actor/types.js'
import { BadRequest, DmsError, NotRunning, Overloaded, errorFromWire, isDmsError } from '../lib/errors.js'
import type { JsonSublevel } from '../services/store.js'
import type { Db } from '../store/db.js'
import { CHANNEL_MAX_BATCH, CHANNEL_MAX_BATCH_BYTES, CHANNEL_MAX_DELIVERS_IN_FLIGHT, CHANNEL_MAX_MESSAGE_BYTES, SEQ_DIGITS } from './constants.js'
import type { Link } from './links.js'
import { ChannelAck, type Refusal } from './wire.js'

/** `open`: handshaking or sending; `refused`: the receiver refused the channel itself (see `error`); `closed`: by `close()` or node stop. */
export type ChannelStatus = 'open' | 'refused' | 'closed'

export interface SenderOptions {
  window: number
  outboxLimit: number
  maxQueuedSends: number
  callTimeoutMs: number
  rtoMs: number
  rtoMaxMs: number
  /** fsync each outbox write: a message `send` resolved survives a machine crash too. */
  sync: boolean
  /** A message (or the whole channel, `seq` undefined) was refused by the receiver: not retried. */
  onRefused?: (err: DmsError, seq: number | undefined) => void
}

export interface SenderParts {
  key: string
  from: Actor
  to: Handle
  name: string
  db: Db
  outbox: JsonSublevel
  meta: JsonSublevel
  failed: JsonSublevel
  link: Link
  opts: SenderOptions
  log: Logger
  onClosed: () => void
}

/** What is kept per channel beside its outbox: enough to resume after a restart. */
export interface SenderMeta { from: Handle, to: Handle, name: string, last: number, acked: number, failed: number }

interface Pending { seq: number, msg: unknown, size: number, resolve: (v: { seq: number }) => void, reject: (e: Error) => void }
interface Waiting { msg: unknown, size: number, resolve: (v: { seq: number }) => void, reject: (e: Error) => void }
type Op = { type: 'put', sublevel: JsonSublevel, key: string, value: unknown } | { type: 'del', sublevel: JsonSublevel, key: string }

/** Errors that say the receiver will not take this channel, whatever we resend: stop, do not retry. */
const CHANNEL_REFUSALS = new Set(['Unauthorized', 'UnknownBehavior', 'BadRequest', 'FrameTooLarge', 'Revoked', 'InvalidToken'])

export const seqKey = (key: string, seq: number): string => `${key}!${String(seq).padStart(SEQ_DIGITS, '0')}`

/**
 * The sending end of one channel: sequence numbers, the durable outbox, the window, go-back-N
 * retransmission with backoff, and the handshake. Invariants (specs/channel.md):
 *   acked ≤ sentUpTo ≤ loadedUpTo ≤ durable ≤ last, and loadedUpTo ≤ acked + window;
 *   `win` holds exactly the messages (acked, loadedUpTo] — the rest of the outbox is on disk only.
 */
export class ChannelSender {
  status: ChannelStatus = 'open'
  error: DmsError | undefined
  /** Highest sequence number assigned / written to the outbox / loaded into the window / sent / acknowledged. */
  last = 0
  durable = 0
  loadedUpTo = 0
  sentUpTo = 0
  acked = 0
  failedCount = 0
  private readonly win = new Map<number, { msg: unknown, size: number }>()
  private toWrite: Pending[] = []
  private toDelete: number[] = []
  private failedOps: Op[] = []
  private writing = false
  private ackWriting = false
  private filling = false
  private readonly waiting: Waiting[] = []
  private deliversInFlight = 0
  /** Set when the link came back or the channel opened: the next step is a hello, not a deliver. */
  private needsHello = true
  private helloInFlight = false
  private rto: number
  private rtoTimer: NodeJS.Timeout | undefined
  private lastProgress = Date.now()
  private readonly ackWaiters: Array<{ seq: number, resolve: () => void, reject: (e: Error) => void }> = []
  private readonly ready: Promise<void>
  /** The outbox writes under way (new messages, acks): `settled` waits for them. */
  private writes: Promise<unknown> = Promise.resolve()
  private ackWrites: Promise<unknown> = Promise.resolve()

  constructor (private readonly p: SenderParts) {
    this.rto = p.opts.rtoMs
    this.ready = this.load()
    this.ready.then(() => { this.kick() }, (err: unknown) => { this.p.log.error({ err, channel: p.key }, 'could not load a channel outbox') })
  }

  get name (): string { return this.p.name }
  get fromId (): string { return this.p.from.handle.id }
  get to (): Handle { return this.p.to }
  get outboxSize (): number { return this.last - this.acked }
  get inFlight (): number { return this.sentUpTo - this.acked }

  private async load (): Promise<void> {
    const meta = await this.p.meta.get(this.p.key) as SenderMeta | undefined
    if (meta !== undefined) {
      this.last = this.durable = meta.last
      this.failedCount = meta.failed
      // `meta.acked` is written with new messages only; the outbox's first entry says more
      let acked = meta.last
      for await (const k of this.p.outbox.keys({ gt: seqKey(this.p.key, 0), lte: seqKey(this.p.key, meta.last), limit: 1 })) acked = Number(k.slice(k.lastIndexOf('!') + 1)) - 1
      this.acked = this.loadedUpTo = this.sentUpTo = Math.max(acked, meta.acked)
    }
    await this.fill()
  }

  /**
   * Resolves once the message is in the outbox on disk, with its sequence number. Waits while
   * the outbox is full; fails with `Overloaded` when too many sends already wait.
   */
  async send (msg: unknown): Promise<{ seq: number }> {
    if (this.status !== 'open') throw this.error ?? new NotRunning(`channel ${this.p.name} is ${this.status}`)
    const json = JSON.stringify(msg)
    if (json === undefined) throw new BadRequest('a channel message must be JSON')
    if (json.length > CHANNEL_MAX_MESSAGE_BYTES) throw new BadRequest(`a channel message is at most ${CHANNEL_MAX_MESSAGE_BYTES} bytes of JSON`, { limit: CHANNEL_MAX_MESSAGE_BYTES, size: json.length })
    await this.ready
    return await new Promise((resolve, reject) => {
      if (this.waiting.length === 0 && this.last - this.acked < this.p.opts.outboxLimit) {
        this.assign({ msg, size: json.length, resolve, reject })
      } else if (this.waiting.length < this.p.opts.maxQueuedSends) {
        this.waiting.push({ msg, size: json.length, resolve, reject })
      } else {
        reject(new Overloaded(`channel ${this.p.name}: the outbox holds ${this.last - this.acked} unacknowledged messages and ${this.waiting.length} sends wait`, { outbox: this.last - this.acked, waiting: this.waiting.length }))
      }
    })
  }

  /** Resolves once the receiver acknowledged `seq` (handled it, or refused it: see onRefused). */
  async whenAcked (seq: number): Promise<void> {
    if (this.acked >= seq) return
    if (this.status !== 'open') throw this.error ?? new NotRunning(`channel ${this.p.name} is ${this.status}`)
    await new Promise<void>((resolve, reject) => { this.ackWaiters.push({ seq, resolve, reject }) })
  }

  private assign (w: Waiting): void {
    const seq = ++this.last
    this.toWrite.push({ seq, ...w })
    this.write()
  }

  /**
   * New messages: one write at a time, everything that accumulated meanwhile in the next batch,
   * fsynced with the channel's record (`last` must never fall behind what the outbox holds).
   */
  private write (): void {
    if (this.writing || this.toWrite.length === 0) return
    this.writing = true
    const puts = this.toWrite
    this.toWrite = []
    const meta: SenderMeta = { from: this.p.from.handle, to: this.p.to, name: this.p.name, last: this.last, acked: this.acked, failed: this.failedCount }
    const ops: Op[] = [
      ...puts.map(w => ({ type: 'put' as const, sublevel: this.p.outbox, key: seqKey(this.p.key, w.seq), value: w.msg })),
      { type: 'put', sublevel: this.p.meta, key: this.p.key, value: meta }
    ]
    this.writes = this.p.db.batch(ops, { sync: this.p.opts.sync }).then(() => {
      this.writing = false
      this.durable = puts[puts.length - 1].seq
      // the common case: the new messages follow the window and fit it — no read back from disk
      for (const w of puts) {
        if (w.seq === this.loadedUpTo + 1 && w.seq <= this.acked + this.p.opts.window) {
          this.win.set(w.seq, { msg: w.msg, size: w.size })
          this.loadedUpTo = w.seq
        }
      }
      for (const w of puts) w.resolve({ seq: w.seq })
      void this.fill()
      this.pump()
      this.write()
    }, (err: unknown) => {
      this.writing = false
      const e = isDmsError(err) ? err : new NotRunning(`channel ${this.p.name}: the outbox could not be written`)
      this.p.log.warn({ err, channel: this.p.key }, 'channel outbox write failed')
      for (const w of puts) w.reject(e)
      if (this.last === puts[puts.length - 1].seq) this.last = puts[0].seq - 1
      this.close(e)
    })
  }

  /**
   * Acknowledged messages leave the outbox (and refused ones are recorded) in writes of their own,
   * not fsynced and not waited for by new messages: losing one to a crash only means the
   * receiver is sent again what it already has, and drops it. Deletions are cumulative prefixes
   * applied in order, so the outbox on disk is always one contiguous run (what `load` relies on).
   */
  private writeAcks (): void {
    if (this.ackWriting || (this.toDelete.length === 0 && this.failedOps.length === 0)) return
    this.ackWriting = true
    const ops: Op[] = [...this.toDelete.map(s => ({ type: 'del' as const, sublevel: this.p.outbox, key: seqKey(this.p.key, s) })), ...this.failedOps]
    this.toDelete = []
    this.failedOps = []
    this.ackWrites = this.p.db.batch(ops, { sync: false }).then(() => {
      this.ackWriting = false
      this.writeAcks()
    }, (err: unknown) => {
      this.ackWriting = false
      this.p.log.debug({ err, channel: this.p.key }, 'could not drop acknowledged messages from the outbox; they are dropped after the next hello')
    })
  }

  /** Loads from disk what the window has room for and is written but not in RAM. */
  private async fill (): Promise<void> {
    if (this.filling) return
    const target = Math.min(this.durable, this.acked + this.p.opts.window)
    if (this.loadedUpTo >= target) return
    this.filling = true
    try {
      const from = Math.max(this.loadedUpTo, this.acked)
      for await (const [k, msg] of this.p.outbox.iterator({ gt: seqKey(this.p.key, from), lte: seqKey(this.p.key, target) })) {
        const seq = Number(k.slice(k.lastIndexOf('!') + 1))
        // an ack may have moved past what this read started from; never leave a hole in the window
        if (seq <= this.acked) continue
        if (seq !== Math.max(this.loadedUpTo, this.acked) + 1) break
        this.win.set(seq, { msg, size: JSON.stringify(msg).length })
        this.loadedUpTo = seq
      }
      if (this.loadedUpTo < this.acked) this.loadedUpTo = this.acked
    } finally {
      this.filling = false
    }
    this.pump()
    if (this.loadedUpTo < Math.min(this.durable, this.acked + this.p.opts.window)) void this.fill()
  }

  /** The link's state changed. */
  linkChanged (): void {
    if (this.p.link.state === 'connected') this.kick()
    else if (this.p.link.state === 'disconnected') this.needsHello = true
  }

  private kick (): void {
    if (this.status !== 'open') return
    if (this.needsHello) void this.hello()
    else this.pump()
  }

  /** Handshake: tell the receiver where we stand, learn its checkpoint, resume after it. */
  private async hello (): Promise<void> {
    if (this.helloInFlight || this.status !== 'open') return
    this.helloInFlight = true
    try {
      await this.ready
      const r = ChannelAck.parse(await this.p.from.invoke(this.p.to, '/dms/channel/hello', { name: this.p.name, last: this.last, acked: this.acked }, { timeout: this.p.opts.callTimeoutMs }))
      this.p.link.alive()
      this.needsHello = false
      if (r.checkpoint > this.last) {
        // the receiver handled numbers we never assigned: our outbox was lost; continue after it
        this.p.log.warn({ channel: this.p.key, checkpoint: r.checkpoint, last: this.last }, 'the receiver is ahead of this sender\'s outbox: continuing after its checkpoint')
        this.last = this.durable = r.checkpoint
      }
      this.onAck(r)
      this.sentUpTo = this.acked
      this.pump()
    } catch (err) {
      this.onCallError(err)
    } finally {
      this.helloInFlight = false
    }
  }

  /** Sends what the window holds and was not sent, in batches, while the link is up. */
  private pump (): void {
    if (this.status !== 'open' || this.needsHello || this.p.link.state !== 'connected') return
    while (this.sentUpTo < this.loadedUpTo && this.deliversInFlight < CHANNEL_MAX_DELIVERS_IN_FLIGHT) {
      const msgs: Array<{ seq: number, msg: unknown }> = []
      let bytes = 0
      for (let s = this.sentUpTo + 1; s <= this.loadedUpTo && msgs.length < CHANNEL_MAX_BATCH; s++) {
        const m = this.win.get(s)
        if (m === undefined) break
        if (msgs.length > 0 && bytes + m.size > CHANNEL_MAX_BATCH_BYTES) break
        msgs.push({ seq: s, msg: m.msg })
        bytes += m.size
      }
      if (msgs.length === 0) break
      this.sentUpTo = msgs[msgs.length - 1].seq
      this.deliver(msgs)
    }
    this.armRto()
  }

  private deliver (msgs: Array<{ seq: number, msg: unknown }>): void {
    this.deliversInFlight++
    this.p.from.invoke(this.p.to, '/dms/channel/deliver', { name: this.p.name, acked: this.acked, msgs }, { timeout: this.p.opts.callTimeoutMs }).then(reply => {
      this.deliversInFlight--
      this.p.link.alive()
      this.onAck(ChannelAck.parse(reply))
      this.pump()
    }, (err: unknown) => {
      this.deliversInFlight--
      this.onCallError(err)
    })
  }

  /** A refusal of the channel stops it; anything else is retried after the retransmission timeout. */
  private onCallError (err: unknown): void {
    if (this.status !== 'open') return
    if (isDmsError(err) && CHANNEL_REFUSALS.has(err.name)) {
      this.p.log.warn({ err: err.toWire(), channel: this.p.key }, 'the receiver refused the channel')
      this.p.opts.onRefused?.(err, undefined)
      this.close(err, 'refused')
      return
    }
    this.p.log.debug({ err, channel: this.p.key }, 'channel call failed; will retransmit')
    this.armRto()
  }

  /** The cumulative ack: drop what it covers from the window and (lazily) from the outbox. */
  private onAck (r: ChannelAck): void {
    for (const ref of r.refused) this.onRefusal(ref)
    const upTo = Math.min(r.checkpoint, this.last)
    if (upTo <= this.acked) return
    for (let s = this.acked + 1; s <= upTo; s++) {
      this.win.delete(s)
      if (s <= this.durable) this.toDelete.push(s)
    }
    this.acked = upTo
    if (this.sentUpTo < upTo) this.sentUpTo = upTo
    if (this.loadedUpTo < upTo) this.loadedUpTo = Math.min(upTo, this.durable)
    this.lastProgress = Date.now()
    this.rto = this.p.opts.rtoMs
    for (let i = this.ackWaiters.length - 1; i >= 0; i--) {
      if (this.ackWaiters[i].seq <= upTo) this.ackWaiters.splice(i, 1)[0].resolve()
    }
    while (this.waiting.length > 0 && this.last - this.acked < this.p.opts.outboxLimit) this.assign(this.waiting.shift() as Waiting)
    this.writeAcks()
    void this.fill()
  }

  private readonly refusedSeen = new Set<number>()
  private onRefusal (ref: Refusal): void {
    if (ref.seq <= this.acked || this.refusedSeen.has(ref.seq)) return
    this.refusedSeen.add(ref.seq)
    if (this.refusedSeen.size > 4096) this.refusedSeen.delete(this.refusedSeen.values().next().value as number)
    this.failedCount++
    const msg = this.win.get(ref.seq)?.msg
    this.failedOps.push({ type: 'put', sublevel: this.p.failed, key: seqKey(this.p.key, ref.seq), value: { seq: ref.seq, msg, error: ref.error } })
    this.p.opts.onRefused?.(errorFromWire(ref.error), ref.seq)
  }

  /**
   * Retransmission: if nothing was acknowledged for `rto` while messages are out, go back to the
   * ack and send again (the receiver drops what it already has), doubling `rto` up to its max.
   */
  private armRto (): void {
    if (this.rtoTimer !== undefined || this.status !== 'open') return
    if (this.last === this.acked && !this.needsHello) return
    this.rtoTimer = setTimeout(() => {
      this.rtoTimer = undefined
      if (this.status !== 'open') return
      if (this.p.link.state !== 'connected') { this.armRto(); return }
      const stalled = Date.now() - this.lastProgress >= this.rto
      if (stalled && this.deliversInFlight === 0 && !this.helloInFlight) {
        this.rto = Math.min(this.rto * 2, this.p.opts.rtoMaxMs)
        this.lastProgress = Date.now()
        if (this.needsHello) { void this.hello(); this.armRto(); return }
        this.sentUpTo = this.acked
        this.pump()
      }
      this.armRto()
    }, this.rto)
    this.rtoTimer.unref()
  }

  /**
   * Resolves once no outbox write is under way (after `close` none starts but those already
   * queued): what `discard` waits for before it deletes the channel's records.
   */
  async settled (): Promise<void> {
    for (let i = 0; i < 1_000 && (this.writing || this.ackWriting); i++) await Promise.allSettled([this.writes, this.ackWrites])
  }

  /** Stops the channel here; its outbox stays on disk and resumes when it is opened again. */
  close (err?: DmsError, status: ChannelStatus = 'closed'): void {
    if (this.status !== 'open') return
    this.status = status
    this.error = err
    if (this.rtoTimer !== undefined) clearTimeout(this.rtoTimer)
    const e = err ?? new NotRunning(`channel ${this.p.name} closed`)
    for (const w of this.waiting.splice(0)) w.reject(e)
    for (const w of this.ackWaiters.splice(0)) w.reject(e)
    this.p.link.releaseSender()
    this.p.onClosed()
  }
}
