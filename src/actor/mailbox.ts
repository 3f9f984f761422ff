import { NotRunning, type DmsError } from '../lib/errors.js'

/** A mailbox job: undefined when it finished synchronously, else a promise of its end. */
export type Job = () => Promise<void> | undefined

export interface MailboxLimits {
  /** Jobs running at once (an allocation actor runs one at a time: 1). */
  concurrency: number
  /** Jobs waiting beyond that; a full mailbox refuses (the caller answers Overloaded). */
  capacity: number
  /**
   * Read-only jobs (behaviours declared `readOnly`: status, a log long poll) running beside the
   * one-at-a-time work, so a reader waiting for output never holds up a stop. Beyond this many at
   * once they are refused (Overloaded). Default MAILBOX_READERS.
   */
  readers?: number
}

/** Read-only jobs an actor runs at once beside its mailbox, unless its limits say otherwise. */
export const MAILBOX_READERS = 64

interface Queued {
  job: Job
  /** Answers the job's caller when the mailbox closes before the job ran. */
  refuse: (err: DmsError) => void
}

/**
 * One actor's mailbox: at most `concurrency` jobs run, at most `capacity` wait, in arrival order.
 * A job that finishes synchronously frees its slot at once; one that returns a promise holds it
 * until the promise settles. A job that throws (a bug: jobs answer their callers themselves) is
 * reported to `onError` and frees its slot, and the jobs behind it still run.
 */
export class Mailbox {
  private running = 0
  private reading = 0
  /** Jobs run to their end since the mailbox opened. */
  private handled = 0
  private readonly queue: Queued[] = []
  private closed = false
  private idleWaiters: Array<() => void> = []

  constructor (readonly limits: MailboxLimits, private readonly onError: (err: unknown) => void) {}

  /** 'full' and 'closed' mean the job will never run; the caller answers its sender. */
  admit (job: Job, refuse: (err: DmsError) => void): 'ok' | 'full' | 'closed' {
    if (this.closed) return 'closed'
    if (this.running < this.limits.concurrency) {
      this.run(job)
      return 'ok'
    }
    if (this.queue.length >= this.limits.capacity) return 'full'
    this.queue.push({ job, refuse })
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

  get depth (): { running: number, queued: number } { return { running: this.running, queued: this.queue.length } }
  get count (): number { return this.handled }

  /**
   * Closes the mailbox: nothing new is admitted. `drain` lets waiting jobs run; `refuse` answers
   * them `NotRunning` now. Resolves once no job runs any more.
   */
  async close (mode: 'drain' | 'refuse'): Promise<void> {
    this.closed = true
    if (mode === 'refuse') {
      for (const q of this.queue.splice(0)) {
        try { q.refuse(new NotRunning('the actor stopped before this message was handled')) } catch (err) { this.onError(err) }
      }
    }
    if (this.running === 0 && this.queue.length === 0) return
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

  private finished (): void {
    this.running--
    this.handled++
    this.startQueued()
  }

  /** Starts waiting jobs while there is room (a loop: synchronous jobs must not recurse). */
  private startQueued (): void {
    while (this.running < this.limits.concurrency && this.queue.length > 0) this.run((this.queue.shift() as Queued).job)
    if (this.running === 0 && this.queue.length === 0 && this.idleWaiters.length > 0) {
      for (const w of this.idleWaiters.splice(0)) w()
    }
  }
}
