import type { Logger } from 'pino'
import type { Actor } from '../actor/actor.js'
import { BadRequest, DmsError, NotFound, StreamClosed, StreamLost, errorFromWire, isDmsError, toWireError, type WireError } from '../lib/errors.js'
import { STREAM_CREDIT_FRACTION } from './constants.js'

/** What both ends need of their node: who sends for them, and how to leave the service's books. */
export interface EndParts {
  id: string
  /** The other end's node (PeerId). */
  peer: string
  /** The node's root actor: the stream's frames travel between root actors (host-authenticated, no signature per chunk). */
  root: () => Actor
  callTimeoutMs: number
  log: Logger
  /** The end is over (ended, cancelled or lost): the service forgets it and releases the link. */
  onDone: () => void
}

/** The JSON size of a chunk, as both ends count it against the credit. */
export function chunkSize (chunk: unknown): number {
  const json = JSON.stringify(chunk)
  if (json === undefined) throw new BadRequest('a stream chunk must be JSON')
  return Buffer.byteLength(json)
}

/** Calls of the protocol carry no capability (the open was authorized): skip the proof lookup. */
const NO_CAP: string[] = []
/**
 * An end or a cancel is the other end's last word about the stream: lost on a connection that
 * broke and is dialled again, the other end would wait for nothing while heartbeats still pass.
 * So it is tried again on `Unreachable`, a few times, backing off (200, 400 ms).
 */
const LAST_WORD_ATTEMPTS = 3
const LAST_WORD_BACKOFF_MS = 200

async function tell (root: () => Actor, peer: string, path: string, msg: unknown, timeoutMs: number): Promise<void> {
  for (let i = 0; i < LAST_WORD_ATTEMPTS; i++) {
    try {
      await root().invoke(peer, path, msg, { timeout: timeoutMs, cap: NO_CAP })
      return
    } catch (err) {
      if (i + 1 >= LAST_WORD_ATTEMPTS || !isDmsError(err, 'Unreachable')) throw err
      await new Promise(resolve => setTimeout(resolve, LAST_WORD_BACKOFF_MS * 2 ** i))
    }
  }
}

/**
 * The reading end: chunks in order as an async iterator, credit granted as they are consumed.
 * The writer never has more than `window` bytes unconsumed here, so a reader that stops reading
 * holds at most a window of the stream.
 */
export class StreamReader implements AsyncIterable<unknown> {
  /** `open` until the end arrived (the queue may still hold chunks), the stream was cancelled or lost. */
  state: 'open' | 'ended' | 'failed' = 'open'
  /** What the writer said at the end (`end(info)`). */
  endInfo: unknown
  readonly window: number
  private readonly queue: Array<{ chunk: unknown, size: number }> = []
  /** Chunks that arrived ahead of a missing one (dispatch may run them out of order): bounded by the credit. */
  private readonly ahead = new Map<number, { chunk: unknown, size: number }>()
  private nextSeq = 1
  private endSeq: number | undefined
  private error: DmsError | undefined
  /** This side cancelled: iteration ends quietly. */
  private cancelledHere = false
  private received = 0
  private consumed = 0
  private advertised: number
  private waiter: (() => void) | undefined
  readonly openedAt = Date.now()

  constructor (private readonly p: EndParts & { window: number }) {
    this.window = p.window
    this.advertised = p.window
  }

  get id (): string { return this.p.id }
  get peer (): string { return this.p.peer }
  /** Bytes received and not yet consumed. */
  get buffered (): number { return this.received - this.consumed }
  get granted (): number { return this.consumed + this.window }
  get chunks (): number { return this.nextSeq - 1 }

  /** A chunk arrived; answers the credit as it stands (the data call's reply). */
  onData (seq: number, chunk: unknown): number {
    if (this.state !== 'open') throw new NotFound(`stream ${this.p.id} is ${this.state} here`, { id: this.p.id })
    if (seq < this.nextSeq || this.ahead.has(seq)) return this.granted
    const size = chunkSize(chunk)
    if (this.received + size > this.granted) {
      // the writer broke the protocol: it would make us hold more than the window
      const err = new BadRequest(`stream ${this.p.id}: the writer sent past its credit (${this.received + size} > ${this.granted} bytes)`, { credit: this.granted })
      this.sendCancel(err.message)
      this.finish(err)
      throw err
    }
    this.received += size
    this.ahead.set(seq, { chunk, size })
    // at most a window's worth of chunks can be ahead, so this loop is bounded by the credit
    for (let c = this.ahead.get(this.nextSeq); c !== undefined; c = this.ahead.get(this.nextSeq)) {
      this.ahead.delete(this.nextSeq)
      this.queue.push(c)
      this.nextSeq++
    }
    this.checkEnd()
    this.wake()
    this.advertised = Math.max(this.advertised, this.granted)
    return this.granted
  }

  onEnd (seq: number, info: unknown): void {
    if (this.state !== 'open') return
    this.endSeq = seq
    this.endInfo = info
    this.checkEnd()
  }

  /** The writer cancelled: its error when it gave one, else who and why. */
  onCancel (reason: string, error: WireError | undefined): void {
    if (this.state !== 'open') return
    this.finish(error !== undefined ? errorFromWire(error) : new StreamClosed(`the writer ended stream ${this.p.id}: ${reason}`, { side: 'writer', reason, id: this.p.id }))
  }

  /** Heartbeats to the writer's node missed (or the node stops). */
  onLost (err: DmsError): void {
    if (this.state !== 'open') return
    this.finish(err)
  }

  /** Ends the stream from this side: the writer is told (and frees everything), iteration ends. */
  cancel (reason: string): void {
    if (this.state !== 'open') {
      this.cancelledHere = true
      this.queue.length = 0
      this.wake()
      return
    }
    this.cancelledHere = true
    this.queue.length = 0
    this.sendCancel(reason)
    this.finish(new StreamClosed(`the reader ended stream ${this.p.id}: ${reason}`, { side: 'reader', reason, id: this.p.id }))
  }

  async next (): Promise<IteratorResult<unknown>> {
    // each turn either returns or waits for the one event that changes the answer
    for (;;) {
      const c = this.queue.shift()
      if (c !== undefined) {
        this.consumed += c.size
        if (this.state === 'open' && this.granted - this.advertised >= this.window / STREAM_CREDIT_FRACTION) this.sendCredit()
        return { done: false, value: c.chunk }
      }
      if (this.cancelledHere) return { done: true, value: undefined }
      if (this.error !== undefined) throw this.error
      if (this.state === 'ended') return { done: true, value: undefined }
      await new Promise<void>(resolve => { this.waiter = resolve })
    }
  }

  [Symbol.asyncIterator] (): AsyncIterator<unknown> {
    return {
      next: async () => await this.next(),
      // a `for await` left early (break, throw) cancels the stream
      return: async () => { this.cancel('the reader stopped iterating'); return { done: true, value: undefined } }
    }
  }

  private checkEnd (): void {
    if (this.endSeq !== undefined && this.nextSeq > this.endSeq && this.state === 'open') {
      this.state = 'ended'
      this.p.onDone()
      this.wake()
    }
  }

  private finish (err: DmsError): void {
    if (this.state !== 'open') return
    this.state = 'failed'
    this.error = err
    this.ahead.clear()
    this.p.onDone()
    this.wake()
  }

  private wake (): void {
    const w = this.waiter
    this.waiter = undefined
    w?.()
  }

  private sendCredit (): void {
    const credit = this.granted
    this.advertised = credit
    this.p.root().invoke(this.p.peer, '/dms/stream/credit', { id: this.p.id, credit }, { timeout: this.p.callTimeoutMs, cap: NO_CAP }).catch((err: unknown) => {
      // a lost grant is overtaken by the next (credit is cumulative); a writer left waiting either
      // hears the next one or, if this pair is in trouble, the heartbeats end the stream
      this.p.log.debug({ err: toWireError(err), id: this.p.id }, 'a stream credit call failed')
      if (this.state === 'open' && isDmsError(err, 'NotFound')) this.finish(new StreamClosed(`the writer no longer has stream ${this.p.id}`, { side: 'writer', reason: 'gone', id: this.p.id }))
    })
  }

  private sendCancel (reason: string): void {
    tell(this.p.root, this.p.peer, '/dms/stream/cancel', { id: this.p.id, to: 'writer', reason: reason.slice(0, 1_000) }, this.p.callTimeoutMs).catch((err: unknown) => {
      // the writer's node is away: its own heartbeats end the stream there within the bound
      this.p.log.debug({ err: toWireError(err), id: this.p.id }, 'a stream cancel call failed')
    })
  }
}

/**
 * The writing end, as an accepting behaviour gets it. `write` waits for credit; `signal` aborts
 * once the stream is over for any reason, so a producer stops at once. Every resource of the
 * stream (timers, the link's hold, the service's entry) is released when it is over.
 */
export class StreamWriter {
  state: 'open' | 'done' = 'open'
  /** Why it ended, when not by `end()`. */
  error: DmsError | undefined
  /** Bytes sent in all; the reader's credit in all (cumulative). */
  sent = 0
  credit: number
  private seq = 0
  private readonly ac = new AbortController()
  private creditWaiter: { resolve: () => void } | undefined
  private stallTimer: NodeJS.Timeout | undefined
  private chain: Promise<void> = Promise.resolve()
  readonly openedAt = Date.now()

  constructor (private readonly p: EndParts & { window: number, stallMs: number }) {
    this.credit = p.window
  }

  get id (): string { return this.p.id }
  get peer (): string { return this.p.peer }
  get window (): number { return this.p.window }
  get chunks (): number { return this.seq }
  /** Bytes the writer may send now. */
  get available (): number { return Math.max(0, this.credit - this.sent) }
  /** Aborts (with the reason) once the stream is over: ended, cancelled by either side, or lost. */
  get signal (): AbortSignal { return this.ac.signal }
  /** Waiting for credit now (the reader is slow or stopped). */
  get blocked (): boolean { return this.creditWaiter !== undefined }

  /**
   * Sends one chunk (any JSON value, at most a quarter of the window) once the reader's credit allows it;
   * resolves when it is handed to the transport. Rejects with why the stream is over.
   */
  async write (chunk: unknown): Promise<void> {
    const size = chunkSize(chunk)
    // at most a quarter window: a reader that consumed a blocked writer's backlog then always has a
    // quarter window of new credit to advertise (its trigger); a larger chunk could wait for
    // credit the reader never sees a reason to send
    const max = Math.floor(this.p.window / STREAM_CREDIT_FRACTION)
    if (size > max) throw new BadRequest(`a chunk of ${size} bytes is over a quarter of stream ${this.p.id}'s window (${max} of ${this.p.window})`, { size, max, window: this.p.window })
    const turn = this.chain.then(async () => { await this.send(chunk, size) })
    this.chain = turn.catch(() => {})
    await turn
  }

  /** No more chunks: the reader gets every chunk sent, then the end (with `info`). */
  async end (info?: unknown): Promise<void> {
    const turn = this.chain.then(() => {
      if (this.state !== 'open') throw this.over()
      const seq = this.seq
      this.done(undefined)
      this.call('/dms/stream/end', info === undefined ? { id: this.p.id, seq } : { id: this.p.id, seq, info })
    })
    this.chain = turn.catch(() => {})
    await turn
  }

  /** Ends the stream from this side; `error` (this side's failure) is what the reader gets. */
  cancel (reason: string, error?: DmsError): void {
    if (this.state !== 'open') return
    this.call('/dms/stream/cancel', { id: this.p.id, to: 'reader', reason: reason.slice(0, 1_000), ...(error !== undefined ? { error: error.toWire() } : {}) })
    this.done(error ?? new StreamClosed(`the writer ended stream ${this.p.id}: ${reason}`, { side: 'writer', reason, id: this.p.id }))
  }

  onCredit (credit: number): void {
    if (credit <= this.credit) return
    this.credit = credit
    if (this.stallTimer !== undefined) { clearTimeout(this.stallTimer); this.stallTimer = undefined }
    const w = this.creditWaiter
    this.creditWaiter = undefined
    w?.resolve()
  }

  onCancel (reason: string): void {
    this.done(new StreamClosed(`the reader ended stream ${this.p.id}: ${reason}`, { side: 'reader', reason, id: this.p.id }))
  }

  onLost (err: DmsError): void { this.done(err) }

  private over (): DmsError {
    return this.error ?? new StreamClosed(`stream ${this.p.id} has ended`, { side: 'writer', reason: 'ended', id: this.p.id })
  }

  private async send (chunk: unknown, size: number): Promise<void> {
    // one wait per credit grant; each grant or the end of the stream wakes it
    while (this.state === 'open' && this.sent + size > this.credit) {
      this.stallTimer ??= setTimeout(() => { this.stalled() }, this.p.stallMs)
      await new Promise<void>(resolve => { this.creditWaiter = { resolve } })
    }
    if (this.state !== 'open') throw this.over()
    this.sent += size
    const seq = ++this.seq
    this.p.root().invoke<{ credit: number }>(this.p.peer, '/dms/stream/data', { id: this.p.id, seq, chunk }, { timeout: this.p.callTimeoutMs, cap: NO_CAP }).then(
      (r) => { this.onCredit(r.credit) },
      (err: unknown) => {
        if (this.state !== 'open') return
        // the reader forgot the stream (it ended it, or its node restarted): nothing to tell it
        if (isDmsError(err, 'NotFound')) this.done(new StreamClosed(`the reader no longer has stream ${this.p.id}`, { side: 'reader', reason: 'gone', id: this.p.id }))
        else if (err instanceof DmsError && err.name === 'BadRequest') this.done(err)
        // a chunk that may not have arrived cannot be sent again (streams are not durable): over
        else this.done(new StreamLost(`stream ${this.p.id}: a chunk did not reach the reader (${err instanceof Error ? err.message : String(err)})`, { side: 'reader', reason: 'unreachable', peer: this.p.peer, id: this.p.id }))
      })
  }

  private stalled (): void {
    this.stallTimer = undefined
    if (this.state !== 'open' || !this.blocked) return
    const err = new StreamLost(`the reader of stream ${this.p.id} granted no credit for ${this.p.stallMs} ms`, { side: 'reader', reason: 'stalled', peer: this.p.peer, id: this.p.id })
    this.call('/dms/stream/cancel', { id: this.p.id, to: 'reader', reason: 'stalled: no credit granted for too long', error: err.toWire() })
    this.done(err)
  }

  /** Over: every resource goes now. */
  private done (err: DmsError | undefined): void {
    if (this.state !== 'open') return
    this.state = 'done'
    this.error = err
    if (this.stallTimer !== undefined) { clearTimeout(this.stallTimer); this.stallTimer = undefined }
    this.p.onDone()
    this.ac.abort(err ?? new StreamClosed(`stream ${this.p.id} ended`, { side: 'writer', reason: 'ended', id: this.p.id }))
    const w = this.creditWaiter
    this.creditWaiter = undefined
    w?.resolve()
  }

  private call (path: string, msg: unknown): void {
    tell(this.p.root, this.p.peer, path, msg, this.p.callTimeoutMs).catch((err: unknown) => {
      this.p.log.debug({ err: toWireError(err), id: this.p.id, path }, 'a stream call failed; the reader\'s heartbeats end the stream there')
    })
  }
}
