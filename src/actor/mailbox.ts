import { NotRunning, type DmsError } from '../lib/errors.js'

/** A mailbox job: undefined when it finished synchronously, else a promise of its end. */
export type Job = () => Promise<void> | undefined

export interface MailboxLimits {
  /** Jobs running at once (an allocation actor runs one at a time: 1). */
  concurrency: number
  /** Jobs waiting beyond that; a full mailbox refuses (the caller answers Overloaded). */
  capacity: number
  /**
   * Jobs of one key (a connected peer, a local sender) waiting at once; beyond this that key's
   * jobs are refused (Overloaded) while other keys' still wait. Default MAILBOX_PER_KEY.
   */
  perKey?: number
  /**
   * Read-only jobs (behaviours declared `readOnly`: status, a log long poll) running beside the
   * one-at-a-time work, so a reader waiting for output never holds up a stop. Beyond this many at
   * once they are refused (Overloaded). Default MAILBOX_READERS.
   */
  readers?: number
}

/** Read-only jobs an actor runs at once beside its mailbox, unless its limits say otherwise. */
export const MAILBOX_READERS = 64
/**
 * Jobs of one key waiting in a mailbox, unless its limits say otherwise: a quarter of the default
 * capacity, so one busy peer can never fill a mailbox and shut the others out.
 */
export const MAILBOX_PER_KEY = 1024

interface Queued {
  job: Job
  /** Answers the job's caller when the mailbox closes before the job ran. */
  refuse: (err: DmsError) => void
}

/** A FIFO of one key's waiting jobs (an array with a read index: shift() in O(1)). */
class Fifo {
  private items: Queued[] = []
  private head = 0
  get length (): number { return this.items.length - this.head }
  push (q: Queued): void { this.items.push(q) }
  shift (): Queued {
    const q = this.items[this.head++]
    if (this.head === this.items.length) { this.items = []; this.head = 0 } else if (this.head > 256 && this.head * 2 > this.items.length) { this.items = this.items.slice(this.head); this.head = 0 }
    return q
  }
  drain (): Queued[] { const out = this.items.slice(this.head); this.items = []; this.head = 0; return out }
}

/**
 * One actor's mailbox: at most `concurrency` jobs run, at most `capacity` wait. Waiting jobs are
 * kept per key (the connected peer or local sender they came from, at most `perKey` each) and
 * started round-robin across keys, in arrival order within a key: a quiet peer's job waits behind
 * at most one job of every other waiting key, however many a busy peer queued (fair queuing).
 * A job that finishes synchronously frees its slot at once; one that returns a promise holds it
 * until the promise settles. A job that throws (a bug: jobs answer their callers themselves) is
 * reported to `onError` and frees its slot, and the jobs behind it still run.
 */
export class Mailbox {
  private running = 0
  private reading = 0
  /** Jobs run to their end since the mailbox opened. */
  private handled = 0
  /** Waiting jobs by key; Map order is the round-robin order (a served key goes to the back). */
  private readonly queues = new Map<string, Fifo>()
  private queued = 0
  private closed = false
  private idleWaiters: Array<() => void> = []

  constructor (readonly limits: MailboxLimits, private readonly onError: (err: unknown) => void) {}

  /** 'full' and 'closed' mean the job will never run; the caller answers its sender. */
  admit (job: Job, refuse: (err: DmsError) => void, key = ''): 'ok' | 'full' | 'closed' {
    if (this.closed) return 'closed'
    if (this.running < this.limits.concurrency) {
      this.run(job)
      return 'ok'
    }
    if (this.queued >= this.limits.capacity) return 'full'
    let fifo = this.queues.get(key)
    if (fifo === undefined) {
      fifo = new Fifo()
      this.queues.set(key, fifo)
    } else if (fifo.length >= (this.limits.perKey ?? MAILBOX_PER_KEY)) {
      return 'full'
    }
    fifo.push({ job, refuse })
    this.queued++
    return 'ok'
  }

  /**
   * A read-only job: runs at once beside the queue (it changes nothing the queue's jobs rely on),
   * within the readers bound. Not waited for by `close` (a reader ends on its own deadline).
   */
  admitReader (job: Job): 'ok' | 'full' | 'closed' {
    if (this.closed) return 'closed'
    if (this.reading >= (this.limits.readers ?? MAILBOX_READERS)) return 'full'
    this.reading++
    this.execute(job, () => { this.reading--; this.handled++ }, () => { this.reading--; this.handled++ })
    return 'ok'
  }

  get depth (): { running: number, queued: number } { return { running: this.running, queued: this.queued } }
  get count (): number { return this.handled }

  /**
   * Closes the mailbox: nothing new is admitted. `drain` lets waiting jobs run; `refuse` answers
   * them `NotRunning` now. Resolves once no job runs any more.
   */
  async close (mode: 'drain' | 'refuse'): Promise<void> {
    this.closed = true
    if (mode === 'refuse') {
      const waiting = [...this.queues.values()].flatMap(f => f.drain())
      this.queues.clear()
      this.queued = 0
      for (const q of waiting) {
        try { q.refuse(new NotRunning('the actor stopped before this message was handled')) } catch (err) { this.onError(err) }
      }
    }
    if (this.running === 0 && this.queued === 0) return
    await new Promise<void>(resolve => { this.idleWaiters.push(resolve) })
  }

  private run (job: Job): void {
    this.running++
    // Only a job that completes asynchronously needs to start those behind it; a synchronous
    // one returns to `startQueued`'s loop (or to `admit`, whose caller had no queue behind it).
    this.execute(job, () => { this.running--; this.handled++ }, () => { this.finished() })
  }

  /** Runs a job; a throw or rejection is reported, never thrown. `done` or `later` frees its slot. */
  private execute (job: Job, done: () => void, later: () => void): void {
    let pending: Promise<void> | undefined
    try {
      pending = job()
    } catch (err) {
      pending = undefined
      this.onError(err)
    }
    if (pending === undefined) { done(); return }
    pending.then(later, (err: unknown) => { this.onError(err); later() })
  }

  /** The next waiting job, round-robin across keys: the first key's oldest, then that key goes last. */
  private next (): Queued {
    const [key, fifo] = this.queues.entries().next().value as [string, Fifo]
    const q = fifo.shift()
    this.queued--
    this.queues.delete(key)
    if (fifo.length > 0) this.queues.set(key, fifo)
    return q
  }

  private finished (): void {
    this.running--
    this.handled++
    this.startQueued()
  }

  /** Starts waiting jobs while there is room (a loop: synchronous jobs must not recurse). */
  private startQueued (): void {
    while (this.running < this.limits.concurrency && this.queued > 0) this.run(this.next().job)
    if (this.running === 0 && this.queued === 0 && this.idleWaiters.length > 0) {
      for (const w of this.idleWaiters.splice(0)) w()
    }
  }
}
