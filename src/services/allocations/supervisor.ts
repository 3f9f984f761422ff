import { InvalidState } from '../../lib/errors.js'
import type { Logger } from '../../lib/log.js'
import type { Executor, ExitInfo, WorkloadRef, WorkloadSpec } from '../executors/types.js'
import { createSerial } from '../serial.js'
import { runHealthCheck } from './health.js'
import { isTerminal, restartPolicyOf, type AllocationRecord, type AllocationStatus, type HealthState } from './spec.js'

/**
 * Looks after one allocation's workload: starts it, waits for its end, applies the restart
 * policy with exponential backoff, runs its health check, stops it. Every change of status goes
 * through `transition` (persisted first, then acted on) and every operation runs in one queue
 * per allocation, so an exit, a failed health check, a stop and a restart never interleave.
 *
 * Each started workload is one *epoch*: events of an earlier epoch (a wait that resolves after a
 * restart or a stop moved on) are ignored.
 */
export interface SupervisorContext {
  executor: Executor
  log: Logger
  clock: () => number
  record: () => AllocationRecord
  workloadSpec: () => WorkloadSpec
  /** Persists a status change (validated against the allowed transitions), then returns the record. */
  transition: (status: AllocationStatus, reason: string, patch?: Partial<AllocationRecord>) => Promise<AllocationRecord>
  /** Persists fields that are not a status change (health, exit code learned late). */
  update: (patch: Partial<AllocationRecord>) => Promise<AllocationRecord>
  /** The allocation reached a terminal status and its workload is gone: release what it held. */
  ended: () => Promise<void>
}

/**
 * A wait that failed without the workload ending (an engine that restarts) is retried, 1 s, 2 s,
 * 4 s, … apart up to 30 s: about 3 minutes in all before its end counts as unobservable.
 */
const MAX_WAIT_RETRIES = 10
const WAIT_RETRY_FIRST_MS = 1_000
const WAIT_RETRY_MAX_MS = 30_000

export class Supervisor {
  private readonly ctx: SupervisorContext
  private readonly serial = createSerial()
  private epoch = 0
  private waitAbort: AbortController | undefined
  private backoffTimer: NodeJS.Timeout | undefined
  private healthTimer: NodeJS.Timeout | undefined
  private retryTimer: NodeJS.Timeout | undefined
  private healthFailures = 0
  /** Why the current epoch's workload is being ended for failing its health check. */
  private unhealthy: string | undefined
  private detached = false

  constructor (ctx: SupervisorContext) {
    this.ctx = ctx
  }

  /** pending → starting → running; on a failed first start: failed (then `ended`) and the error. */
  async start (): Promise<AllocationRecord> {
    return await this.serial(async () => {
      const rec = this.ctx.record()
      if (rec.status !== 'pending') throw new InvalidState(`allocation ${rec.id} is ${rec.status}, not pending`, { id: rec.id, status: rec.status })
      await this.ctx.transition('starting', 'starting its workload')
      try {
        await this.launch()
      } catch (err) {
        await this.end('failed', `its workload could not start: ${(err as Error).message}`, {})
        throw err
      }
      return this.ctx.record()
    })
  }

  /** After a daemon restart: the workload runs; watch it again (status stays `running`). */
  adopt (ref: WorkloadRef): void {
    const epoch = ++this.epoch
    this.watch(ref, epoch)
    this.startHealth(ref, epoch)
  }

  /** → stopped: SIGTERM, SIGKILL after the grace, then clean up and release. Idempotent. */
  async stop (opts: { graceMs?: number, reason?: string } = {}): Promise<AllocationRecord> {
    return await this.serial(async () => {
      const rec = this.ctx.record()
      if (isTerminal(rec.status)) return rec
      this.clearTimers()
      this.epoch++
      const ref = rec.status === 'running' ? rec.ref : undefined
      await this.ctx.transition('stopped', opts.reason ?? 'stopped on request', { endedAt: this.ctx.clock() })
      if (ref !== undefined) {
        const info = await this.halt(ref, opts.graceMs ?? rec.spec.stopGraceMs)
        if (info !== undefined) await this.ctx.update({ exitCode: info.exitCode, signal: info.signal })
        await this.cleanup(ref)
      }
      await this.ctx.ended()
      return this.ctx.record()
    })
  }

  /** A restart asked for (not counted against the policy): the workload is stopped and started anew. */
  async restart (reason = 'restart asked for'): Promise<AllocationRecord> {
    return await this.serial(async () => {
      const rec = this.ctx.record()
      if (rec.status !== 'running' && rec.status !== 'starting') throw new InvalidState(`allocation ${rec.id} is ${rec.status}: only a running or starting one restarts`, { id: rec.id, status: rec.status })
      this.clearTimers()
      this.epoch++
      const ref = rec.status === 'running' ? rec.ref : undefined
      await this.ctx.transition('starting', reason, { restarts: rec.restarts + 1 })
      if (ref !== undefined) {
        await this.halt(ref, rec.spec.stopGraceMs)
        await this.cleanup(ref)
      }
      try {
        await this.launch()
      } catch (err) {
        await this.afterFailure(`its workload could not start: ${(err as Error).message}`, {})
      }
      return this.ctx.record()
    })
  }

  /** Stops watching (timers, waits) and leaves the workload running: the daemon shuts down. */
  async detach (): Promise<void> {
    this.detached = true
    this.clearTimers()
    this.waitAbort?.abort(new Error('detached'))
    // Whatever was already under way finishes first (a stop in its grace, a start).
    await this.serial(async () => {})
  }

  // ---- inside the queue ----

  /** Status is `starting`: start a workload and record it `running`. Throws what start throws. */
  private async launch (): Promise<void> {
    const ref = await this.ctx.executor.start(this.ctx.workloadSpec())
    const epoch = ++this.epoch
    this.unhealthy = undefined
    try {
      await this.ctx.transition('running', `running (limits: ${ref.limits})`, { ref, limits: ref.limits, startedAt: this.ctx.clock(), exitCode: undefined, signal: undefined, health: this.ctx.record().spec.healthcheck !== undefined ? { status: 'unknown', failures: 0 } : undefined })
    } catch (err) {
      // Not recorded: it must not run unknown to us (recovery would also find and stop it).
      await this.halt(ref, 0)
      await this.cleanup(ref)
      throw err
    }
    this.watch(ref, epoch)
    this.startHealth(ref, epoch)
  }

  private watch (ref: WorkloadRef, epoch: number, attempt = 0): void {
    const ac = new AbortController()
    this.waitAbort = ac
    this.ctx.executor.wait(ref, { signal: ac.signal }).then(
      (info) => { this.enqueue(async () => { await this.onExit(epoch, ref, info) }) },
      (err: unknown) => {
        if (ac.signal.aborted || this.detached || epoch !== this.epoch) return
        this.ctx.log.warn({ err, allocationId: ref.allocationId }, 'waiting for the workload failed')
        this.enqueue(async () => {
          if (this.detached || epoch !== this.epoch) return
          // Still running, or unknown (the executor does not answer now): wait again, a bounded number of times.
          const alive = await this.ctx.executor.alive(ref).catch(() => undefined)
          if (attempt < MAX_WAIT_RETRIES && alive !== false) {
            this.retryTimer = setTimeout(() => {
              this.retryTimer = undefined
              if (!this.detached && epoch === this.epoch) this.watch(ref, epoch, attempt + 1)
            }, Math.min(WAIT_RETRY_MAX_MS, WAIT_RETRY_FIRST_MS * 2 ** attempt))
            this.retryTimer.unref()
            return
          }
          await this.onExit(epoch, ref, { exitCode: null, signal: null, stopped: false, reason: `its end could not be observed: ${(err as Error).message}` })
        })
      })
  }

  private async onExit (epoch: number, ref: WorkloadRef, info: ExitInfo): Promise<void> {
    if (this.detached || epoch !== this.epoch) return
    const rec = this.ctx.record()
    if (rec.status !== 'running') return
    this.stopHealth()
    const exit = { exitCode: info.exitCode, signal: info.signal }
    const policy = restartPolicyOf(rec.spec)
    const unhealthy = this.unhealthy
    const failed = unhealthy !== undefined || info.exitCode !== 0
    const why = unhealthy !== undefined ? `unhealthy: ${unhealthy}` : info.reason
    if (rec.type === 'task' || policy.policy === 'never' || (policy.policy === 'on-failure' && !failed)) {
      await this.end(failed ? 'failed' : 'completed', why, exit, ref)
      return
    }
    await this.afterFailure(why, exit, ref)
  }

  /**
   * The workload ended (or could not start) and the policy restarts: after a backoff, unless the
   * window's restarts are used up (then `failed`).
   */
  private async afterFailure (why: string, patch: Partial<AllocationRecord>, ref?: WorkloadRef): Promise<void> {
    const rec = this.ctx.record()
    const policy = restartPolicyOf(rec.spec)
    const now = this.ctx.clock()
    const recent = rec.restartTimes.filter(t => t > now - policy.windowMs)
    if (rec.type === 'task' || policy.policy === 'never' || recent.length >= policy.maxRestarts) {
      const limit = rec.type === 'service' && policy.policy !== 'never' ? `; ${recent.length} restarts within ${policy.windowMs} ms, the most allowed` : ''
      await this.end('failed', `${why}${limit}`, patch, ref)
      return
    }
    const delay = Math.min(policy.backoff.maxMs, policy.backoff.baseMs * 2 ** recent.length)
    await this.ctx.transition('starting', `${why}; restart ${recent.length + 1} of at most ${policy.maxRestarts} within ${policy.windowMs} ms, in ${delay} ms`, {
      ...patch, restarts: rec.restarts + 1, restartTimes: [...recent, now]
    })
    if (ref !== undefined) await this.cleanup(ref)
    const epoch = this.epoch
    this.backoffTimer = setTimeout(() => {
      this.backoffTimer = undefined
      this.enqueue(async () => {
        if (this.detached || epoch !== this.epoch || this.ctx.record().status !== 'starting') return
        try {
          await this.launch()
        } catch (err) {
          await this.afterFailure(`its workload could not start: ${(err as Error).message}`, {})
        }
      })
    }, delay)
    this.backoffTimer.unref()
  }

  /** → a terminal status (persisted first), then the workload's leftovers go, then release. */
  private async end (status: 'completed' | 'failed', reason: string, patch: Partial<AllocationRecord>, ref?: WorkloadRef): Promise<void> {
    this.clearTimers()
    await this.ctx.transition(status, reason, { ...patch, endedAt: this.ctx.clock() })
    if (ref !== undefined) await this.cleanup(ref)
    await this.ctx.ended()
  }

  /** Stops a workload and learns how it ended (undefined if that cannot be known in time). */
  private async halt (ref: WorkloadRef, graceMs: number): Promise<ExitInfo | undefined> {
    try {
      await this.ctx.executor.stop(ref, graceMs)
      return await this.ctx.executor.wait(ref, { signal: AbortSignal.timeout(5_000) })
    } catch (err) {
      this.ctx.log.warn({ err, allocationId: ref.allocationId }, 'stopping the workload failed')
      return undefined
    }
  }

  /** Frees what is left of an ended workload; a failure is logged (recovery finds it again). */
  private async cleanup (ref: WorkloadRef): Promise<void> {
    try {
      await this.ctx.executor.stop(ref, 0)
      await this.ctx.executor.remove(ref)
    } catch (err) {
      this.ctx.log.warn({ err, allocationId: ref.allocationId }, 'removing the ended workload failed')
    }
  }

  // ---- health ----

  private startHealth (ref: WorkloadRef, epoch: number): void {
    const check = this.ctx.record().spec.healthcheck
    if (check === undefined) return
    this.healthFailures = 0
    const since = this.ctx.clock()
    // As Docker's start period: failures do not count until it passed or a check succeeded.
    let started = false
    const tick = async (): Promise<void> => {
      if (this.detached || epoch !== this.epoch) return
      // The check runs outside the queue (a slow one must not hold up an exit or a stop)...
      const r = await runHealthCheck(check, { executor: this.ctx.executor, ref, ports: this.ctx.record().spec.ports })
      // ...and its outcome is handled inside it.
      this.enqueue(async () => {
        if (this.detached || epoch !== this.epoch || this.ctx.record().status !== 'running') return
        const now = this.ctx.clock()
        const before = this.ctx.record().health
        if (r.ok) {
          started = true
          this.healthFailures = 0
          if (before?.status !== 'healthy' || before.failures !== 0) await this.setHealth({ status: 'healthy', failures: 0, checkedAt: now })
        } else if (started || now - since >= check.startPeriodMs) {
          this.healthFailures++
          if (this.healthFailures >= check.retries) {
            await this.setHealth({ status: 'unhealthy', failures: this.healthFailures, checkedAt: now, detail: r.detail })
            this.unhealthy = `${r.detail} (${this.healthFailures} checks in a row)`
            // Its end, observed by the wait, applies the restart policy with this cause.
            await this.ctx.executor.stop(ref, this.ctx.record().spec.stopGraceMs)
            return
          }
          await this.setHealth({ status: before?.status ?? 'unknown', failures: this.healthFailures, checkedAt: now, detail: r.detail })
        }
        schedule()
      })
    }
    const schedule = (): void => {
      this.healthTimer = setTimeout(() => {
        this.healthTimer = undefined
        tick().catch((err: unknown) => { this.ctx.log.error({ err, allocationId: ref.allocationId }, 'health check failed to run') })
      }, check.intervalMs)
      this.healthTimer.unref()
    }
    schedule()
  }

  private async setHealth (health: HealthState): Promise<void> {
    await this.ctx.update({ health })
  }

  private stopHealth (): void {
    if (this.healthTimer !== undefined) clearTimeout(this.healthTimer)
    this.healthTimer = undefined
  }

  private clearTimers (): void {
    this.stopHealth()
    if (this.backoffTimer !== undefined) clearTimeout(this.backoffTimer)
    this.backoffTimer = undefined
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer)
    this.retryTimer = undefined
  }

  /** Runs a task in the queue; its failure is logged (an event has no caller to tell). */
  private enqueue (task: () => Promise<void>): void {
    // the log is the allocation's own child logger: it names the allocation even once its record is gone
    this.serial(task).catch((err: unknown) => { this.ctx.log.error({ err }, 'allocation supervisor step failed') })
  }
}
