import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { Conflict, ExecutorUnavailable, InvalidState, NotFound, NotRunning } from '../../lib/errors.js'
import type { Logger } from '../../lib/log.js'
import type { Db } from '../../store/db.js'
import type { ExecResult, Executor, ExecutorName, WorkloadRef, WorkloadSpec } from '../executors/types.js'
import { encodeName } from '../executors/process/names.js'
import { checkId } from '../ids.js'
import { LOG_CHECK_INTERVAL_MS, MAX_TRANSITIONS, ORPHAN_GRACE_MS } from './constants.js'
import { workloadEnv } from './env.js'
import { LogFiles, type LogChunk, type LogStream } from './logs.js'
import { NEXT, isTerminal, parseSpec, type AllocationRecord, type AllocationStatus } from './spec.js'
import { AllocationStore, type DamagedRecord } from './store.js'
import { Supervisor } from './supervisor.js'

export * from './spec.js'
export { workloadEnv, STANDARD_PATH } from './env.js'
export { LogFiles, LOG_STREAMS, type LogChunk, type LogStream } from './logs.js'

/**
 * The allocation runtime: the node's allocations as plain services (no actors, no network).
 * The allocation actor calls it; it persists each allocation's record in the node's db, runs its
 * workload through an executor under a supervisor (restart policy, health checks), keeps its logs
 * and, after a restart of the daemon, re-adopts what still runs, fails what does not and stops
 * what no record claims.
 *
 * Resources and ports are the caller's: it reserves them before `create`, passes the leased
 * host ports in the spec, and releases both in `onEnded`, which is called once per allocation
 * after it ended and its workload is gone (again after a restart if the daemon died before
 * `onEnded` returned: releasing must be idempotent, as the ledger's and port allocator's are).
 */
export interface AllocationRuntime {
  /**
   * Loads the records and recovers (see RecoveryReport); then runs the log rotation timer.
   * Executors must be usable (probed) before.
   */
  start: () => Promise<RecoveryReport>
  /**
   * Stops looking after the workloads and leaves them running (a daemon that shuts down: the
   * next start re-adopts them). Resolves once operations under way finished, so the db can close.
   */
  stop: () => Promise<void>

  /**
   * Records a new allocation as `pending`. Refuses at once, leaving nothing behind: a bad id
   * (`InvalidArgument`), a bad spec (`BadRequest` naming the field, unknown fields included),
   * an executor this node does not offer (`ExecutorUnavailable`), an id in use (`Conflict`).
   */
  create: (id: string, spec: unknown) => Promise<AllocationRecord>
  /**
   * Starts it: pending → starting → running. When the workload cannot start (a command that does
   * not exist: `BadRequest`; a port in use: `PortUnavailable`; …) the allocation is recorded
   * `failed`, `onEnded` runs, and the executor's typed error is thrown.
   */
  run: (id: string) => Promise<AllocationRecord>
  /** → stopped (SIGTERM, SIGKILL after the grace, default the spec's). Idempotent on an ended one. */
  stopAllocation: (id: string, opts?: { graceMs?: number, reason?: string }) => Promise<AllocationRecord>
  /** Stops and starts the workload again (running or starting only); not counted by the policy. */
  restartAllocation: (id: string, reason?: string) => Promise<AllocationRecord>
  /** Forgets an ended allocation: its record and its directory (logs included). */
  removeAllocation: (id: string) => Promise<void>

  get: (id: string) => AllocationRecord | undefined
  list: () => AllocationRecord[]
  /** Called after every persisted change of a record (status, health, release); returns unsubscribe. */
  onChange: (listener: (record: AllocationRecord) => void) => () => void

  /** A chunk of a log stream (offsets are bytes ever written; see LogFiles). */
  readLogs: (id: string, o: { stream: LogStream, offset: number, maxBytes: number }) => Promise<LogChunk>
  /**
   * A long poll: resolves `data` once the stream holds more than `offset` bytes, `ended` once the
   * allocation reached a terminal status (no more will come), `deadline` when `signal` aborts.
   */
  waitForLogs: (id: string, o: { stream: LogStream, offset: number, signal: AbortSignal }) => Promise<'data' | 'ended' | 'deadline'>
  /** A command in the running workload (what a `command` health check does). */
  exec: (id: string, argv: string[], opts: { timeoutMs: number }) => Promise<ExecResult>
  stats: (id: string) => Promise<{ cpuSeconds?: number, memoryBytes?: number }>
}

/** What `start` found and did, for the log and for the caller to check. */
export interface RecoveryReport {
  /** Still running: watched again. */
  adopted: string[]
  /** Were starting or running and their workload is gone, or their executor is: now failed. */
  failed: string[]
  /** Created and never started: kept pending. */
  pending: string[]
  /** Ended allocations whose release had not completed: `onEnded` called now. */
  released: string[]
  /** Workloads no record claims, stopped and removed. */
  orphans: Array<{ executor: ExecutorName, allocationId: string, id: string }>
  /** Records that do not parse: left as they are, reported. */
  damaged: DamagedRecord[]
  /** What could not be done (an executor that could not list, an orphan that would not stop). */
  errors: string[]
}

export interface AllocationRuntimeInit {
  /** `<data-dir>/allocations`: one directory per allocation (logs, default working dir). */
  dir: string
  /** fsync each record write (default true; tests turn it off for speed). */
  syncWrites?: boolean
  /** Grace for orphans stopped by recovery (default ORPHAN_GRACE_MS). */
  orphanGraceMs?: number
  /** Period of the log size check (default LOG_CHECK_INTERVAL_MS). */
  logCheckIntervalMs?: number
}

export interface AllocationRuntimeComponents {
  db: Db
  log: Logger
  /** The executors this node offers (only those that work here: see executors/index.ts). */
  executors: Partial<Record<ExecutorName, Executor>>
  /** Unix ms (default Date.now): transition times and the restart window. */
  clock?: () => number
  /** Release the allocation's resources and ports; idempotent (see AllocationRuntime). */
  onEnded?: (record: AllocationRecord) => Promise<void> | void
}

export function createAllocationRuntime (init: AllocationRuntimeInit, components: AllocationRuntimeComponents): AllocationRuntime {
  return new Runtime(init, components)
}

interface Entry {
  record: AllocationRecord
  logs: LogFiles
  supervisor?: Supervisor
}

class Runtime implements AllocationRuntime {
  private readonly dir: string
  private readonly orphanGraceMs: number
  private readonly logCheckIntervalMs: number
  private readonly store: AllocationStore
  private readonly log: Logger
  private readonly executors: Partial<Record<ExecutorName, Executor>>
  private readonly clock: () => number
  private readonly onEnded?: (record: AllocationRecord) => Promise<void> | void
  private readonly entries = new Map<string, Entry>()
  private readonly listeners = new Set<(record: AllocationRecord) => void>()
  private readonly releasing = new Map<string, Promise<void>>()
  private logTimer: NodeJS.Timeout | undefined
  private running = false

  constructor (init: AllocationRuntimeInit, components: AllocationRuntimeComponents) {
    this.dir = init.dir
    this.orphanGraceMs = init.orphanGraceMs ?? ORPHAN_GRACE_MS
    this.logCheckIntervalMs = init.logCheckIntervalMs ?? LOG_CHECK_INTERVAL_MS
    this.store = new AllocationStore(components.db, { syncWrites: init.syncWrites })
    this.log = components.log
    this.executors = components.executors
    this.clock = components.clock ?? Date.now
    this.onEnded = components.onEnded
  }

  async start (): Promise<RecoveryReport> {
    if (this.running) throw new InvalidState('the allocation runtime is already running')
    await mkdir(this.dir, { recursive: true })
    this.running = true
    const report = await this.recover()
    this.logTimer = setInterval(() => { this.rotateLogs().catch((err: unknown) => this.log.warn({ err }, 'log rotation failed')) }, this.logCheckIntervalMs)
    this.logTimer.unref()
    this.log.info({
      adopted: report.adopted.length, failed: report.failed.length, pending: report.pending.length, released: report.released.length,
      orphans: report.orphans.length, damaged: report.damaged.length, errors: report.errors
    }, 'allocations recovered')
    for (const d of report.damaged) this.log.error({ key: d.key, error: d.error }, 'allocation record does not parse; left as it is')
    return report
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    clearInterval(this.logTimer)
    this.logTimer = undefined
    await Promise.all([...this.entries.values()].map(async e => await e.supervisor?.detach()))
  }

  // ---- recovery ----

  private async recover (): Promise<RecoveryReport> {
    const report: RecoveryReport = { adopted: [], failed: [], pending: [], released: [], orphans: [], damaged: [], errors: [] }
    const { records, damaged } = await this.store.loadAll()
    report.damaged = damaged
    this.entries.clear()
    for (const record of records) this.entries.set(record.id, { record, logs: this.logsFor(record) })

    const claimed = new Set<string>()
    for (const record of records) {
      if (isTerminal(record.status)) continue
      const ex = this.executors[record.executor]
      const ref = record.ref
      // true, false, or undefined when the executor cannot tell now (a docker engine that does not
      // answer): such a workload is watched as if alive; its wait finds out later.
      const alive = record.status === 'running' && ex !== undefined && ref !== undefined
        ? await ex.alive(ref).catch((err: unknown) => { report.errors.push(`${record.id}: cannot tell whether its workload runs: ${(err as Error).message}`); return undefined })
        : false
      // Never asked to start, so nothing of it runs or was lost: its controller may still start it.
      if (record.status === 'pending' && ref === undefined && ex !== undefined) {
        report.pending.push(record.id)
        continue
      }
      if (alive !== false && ref !== undefined) {
        this.supervise(record.id).adopt(ref)
        claimed.add(claimKey(ref))
        report.adopted.push(record.id)
        continue
      }
      const why = ex === undefined
        ? `the ${record.executor} executor is not available after the daemon restarted`
        : record.status === 'running'
          ? 'its workload was gone when the daemon restarted'
          : `the daemon restarted while it was ${record.status}`
      // How it ended, if the executor still knows (the process executor's exit file, a container's state).
      const info = ex !== undefined && ref !== undefined && record.status === 'running'
        ? await ex.wait(ref, { signal: AbortSignal.timeout(2_000) }).catch(() => undefined)
        : undefined
      await this.transition(record.id, 'failed', info !== undefined ? `${why} (${info.reason})` : why, {
        endedAt: this.clock(), ...(info !== undefined ? { exitCode: info.exitCode, signal: info.signal } : {})
      })
      // What its workload left (a cgroup, a container) goes with it; any other is an orphan below.
      if (ex !== undefined && ref !== undefined) {
        try {
          await ex.stop(ref, 0)
          await ex.remove(ref)
        } catch (err) {
          report.errors.push(`${record.executor}: cannot remove what ${record.id} left: ${(err as Error).message}`)
        }
      }
      report.failed.push(record.id)
    }
    for (const e of this.entries.values()) {
      if (isTerminal(e.record.status) && !e.record.released) {
        await this.ended(e.record.id)
        report.released.push(e.record.id)
      }
    }
    // Whatever runs or is kept for this node that no live record claims: stopped and removed.
    await Promise.all(Object.entries(this.executors).map(async ([name, ex]) => {
      let refs: WorkloadRef[]
      try {
        refs = await ex.list()
      } catch (err) {
        report.errors.push(`${name}: cannot list workloads: ${(err as Error).message}`)
        return
      }
      await Promise.all(refs.filter(r => !claimed.has(claimKey(r))).map(async (r) => {
        try {
          await ex.stop(r, this.orphanGraceMs)
          await ex.remove(r)
          report.orphans.push({ executor: ex.name, allocationId: r.allocationId, id: r.id })
        } catch (err) {
          report.errors.push(`${name}: cannot stop the orphan ${r.allocationId} (${r.id}): ${(err as Error).message}`)
        }
      }))
    }))
    return report
  }

  // ---- allocations ----

  async create (id: string, input: unknown): Promise<AllocationRecord> {
    this.assertRunning()
    checkId(id, 'allocation id')
    const spec = parseSpec(input)
    if (this.executors[spec.executor] === undefined) {
      throw new ExecutorUnavailable(`this node does not offer the ${spec.executor} executor (offered: ${Object.keys(this.executors).join(', ') || 'none'})`, { field: 'spec.executor', executor: spec.executor, offered: Object.keys(this.executors) })
    }
    if (this.entries.has(id)) throw new Conflict(`allocation ${id} exists`, { id })
    const now = this.clock()
    const record: AllocationRecord = {
      id, type: spec.type, executor: spec.executor, spec, status: 'pending', reason: 'created',
      transitions: [{ at: now, status: 'pending', reason: 'created' }], transitionCount: 1,
      restarts: 0, restartTimes: [], createdAt: now, released: false
    }
    // Claimed in memory before the write: a concurrent create of the same id is refused.
    this.entries.set(id, { record, logs: this.logsFor(record) })
    try {
      await this.store.put(record)
    } catch (err) {
      this.entries.delete(id)
      throw err
    }
    this.notify(record)
    return record
  }

  async run (id: string): Promise<AllocationRecord> {
    this.assertRunning()
    this.entry(id)
    await mkdir(this.dirOf(id), { recursive: true })
    return await this.supervise(id).start()
  }

  async stopAllocation (id: string, opts: { graceMs?: number, reason?: string } = {}): Promise<AllocationRecord> {
    this.assertRunning()
    const e = this.entry(id)
    if (isTerminal(e.record.status)) return e.record
    return await this.supervise(id).stop(opts)
  }

  async restartAllocation (id: string, reason?: string): Promise<AllocationRecord> {
    this.assertRunning()
    this.entry(id)
    return await this.supervise(id).restart(reason)
  }

  async removeAllocation (id: string): Promise<void> {
    this.assertRunning()
    const e = this.entry(id)
    if (!isTerminal(e.record.status)) throw new InvalidState(`allocation ${id} is ${e.record.status}: stop it first`, { id, status: e.record.status })
    if (!e.record.released) await this.ended(id)
    await this.store.del(id)
    this.entries.delete(id)
    await rm(this.dirOf(id), { recursive: true, force: true })
  }

  get (id: string): AllocationRecord | undefined {
    return this.entries.get(id)?.record
  }

  list (): AllocationRecord[] {
    return [...this.entries.values()].map(e => e.record)
  }

  onChange (listener: (record: AllocationRecord) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  async readLogs (id: string, o: { stream: LogStream, offset: number, maxBytes: number }): Promise<LogChunk> {
    return await this.entry(id).logs.read(o)
  }

  async waitForLogs (id: string, o: { stream: LogStream, offset: number, signal: AbortSignal }): Promise<'data' | 'ended' | 'deadline'> {
    const e = this.entry(id)
    const stop = new AbortController()
    const onAbort = (): void => stop.abort()
    o.signal.addEventListener('abort', onAbort, { once: true })
    let ended = false
    const unsubscribe = this.onChange((r) => { if (r.id === id && isTerminal(r.status)) { ended = true; stop.abort() } })
    try {
      if (isTerminal(e.record.status)) ended = true
      const data = ended ? await e.logs.written(o.stream) > o.offset : await e.logs.waitFor({ stream: o.stream, offset: o.offset, signal: stop.signal })
      // Output written just before the end is still data.
      if (data || await e.logs.written(o.stream) > o.offset) return 'data'
      return ended ? 'ended' : 'deadline'
    } finally {
      unsubscribe()
      o.signal.removeEventListener('abort', onAbort)
    }
  }

  async exec (id: string, argv: string[], opts: { timeoutMs: number }): Promise<ExecResult> {
    const { record, executor } = this.runningWorkload(id)
    return await executor.exec(record.ref, argv, opts)
  }

  async stats (id: string): Promise<{ cpuSeconds?: number, memoryBytes?: number }> {
    const { record, executor } = this.runningWorkload(id)
    return await executor.stats(record.ref)
  }

  // ---- inside ----

  private runningWorkload (id: string): { record: AllocationRecord & { ref: WorkloadRef }, executor: Executor } {
    const record = this.entry(id).record
    const executor = this.executors[record.executor]
    if (record.status !== 'running' || record.ref === undefined || executor === undefined) {
      throw new InvalidState(`allocation ${id} is ${record.status}, not running`, { id, status: record.status })
    }
    return { record: { ...record, ref: record.ref }, executor }
  }

  private supervise (id: string): Supervisor {
    const e = this.entry(id)
    if (e.supervisor !== undefined) return e.supervisor
    const executor = this.executors[e.record.executor]
    if (executor === undefined) throw new ExecutorUnavailable(`this node does not offer the ${e.record.executor} executor`, { executor: e.record.executor })
    e.supervisor = new Supervisor({
      executor,
      log: this.log.child({ allocation: id }),
      clock: this.clock,
      record: () => this.entry(id).record,
      workloadSpec: () => this.workloadSpec(id),
      transition: async (status, reason, patch) => await this.transition(id, status, reason, patch),
      update: async (patch) => await this.update(id, patch),
      ended: async () => { await this.ended(id) }
    })
    return e.supervisor
  }

  private workloadSpec (id: string): WorkloadSpec {
    const e = this.entry(id)
    const spec = e.record.spec
    return {
      allocationId: id,
      command: spec.command ?? [],
      ...(spec.entrypoint !== undefined ? { entrypoint: spec.entrypoint } : {}),
      ...(spec.image !== undefined ? { image: spec.image } : {}),
      ...(spec.vm !== undefined ? { guest: spec.vm } : {}),
      env: workloadEnv(spec.env, id, spec.ports, { defaultPath: spec.executor === 'process' }),
      ...(spec.workingDir !== undefined ? { workingDir: spec.workingDir } : {}),
      limits: { cpuCores: spec.resources.cpuCores, ramBytes: spec.resources.ramBytes },
      ports: spec.ports.map(p => ({ host: p.host, container: p.container, protocol: p.protocol })),
      dir: this.dirOf(id),
      stdoutPath: e.logs.path('stdout'),
      stderrPath: e.logs.path('stderr')
    }
  }

  /** Validates, persists, then mirrors and tells listeners: the write comes before any act. */
  private async transition (id: string, status: AllocationStatus, reason: string, patch: Partial<AllocationRecord> = {}): Promise<AllocationRecord> {
    const e = this.entry(id)
    const from = e.record.status
    if (!NEXT[from].includes(status)) throw new InvalidState(`allocation ${id} cannot go from ${from} to ${status}`, { id, from, to: status })
    const at = this.clock()
    const next: AllocationRecord = {
      ...e.record,
      ...patch,
      status,
      reason,
      transitions: [...e.record.transitions, { at, status, reason }].slice(-MAX_TRANSITIONS),
      transitionCount: e.record.transitionCount + 1
    }
    await this.write(e, next)
    return next
  }

  private async update (id: string, patch: Partial<AllocationRecord>): Promise<AllocationRecord> {
    const e = this.entry(id)
    const next: AllocationRecord = { ...e.record, ...patch }
    await this.write(e, next)
    return next
  }

  private async write (e: Entry, next: AllocationRecord): Promise<void> {
    // `undefined` fields are dropped, as JSON drops them: the mirror equals what a reload gives.
    const clean = JSON.parse(JSON.stringify(next)) as AllocationRecord
    await this.store.put(clean)
    e.record = clean
    this.notify(clean)
  }

  /**
   * Releases once: onEnded, then `released` persisted. A failure is logged and retried at the next
   * start. Calls while one is under way share it (the supervisor's end and a removal may race).
   */
  private async ended (id: string): Promise<void> {
    let p = this.releasing.get(id)
    if (p === undefined) {
      p = this.release(id).finally(() => { this.releasing.delete(id) })
      this.releasing.set(id, p)
    }
    await p
  }

  private async release (id: string): Promise<void> {
    const e = this.entry(id)
    if (e.record.released) return
    try {
      await this.onEnded?.(e.record)
    } catch (err) {
      this.log.error({ err, allocation: id }, 'releasing the allocation failed; tried again at the next start')
      return
    }
    await this.update(id, { released: true })
    e.supervisor = undefined
  }

  private async rotateLogs (): Promise<void> {
    for (const e of this.entries.values()) {
      if (e.record.status === 'running' || e.record.status === 'starting') await e.logs.rotateIfNeeded()
    }
  }

  private notify (record: AllocationRecord): void {
    for (const l of this.listeners) {
      try { l(record) } catch (err) { this.log.error({ err }, 'allocation change listener failed') }
    }
  }

  private entry (id: string): Entry {
    const e = this.entries.get(id)
    if (e === undefined) throw new NotFound(`no allocation ${id}`, { id })
    return e
  }

  private dirOf (id: string): string {
    return join(this.dir, encodeName(id))
  }

  private logsFor (record: AllocationRecord): LogFiles {
    return new LogFiles({ dir: this.dirOf(record.id), maxBytes: record.spec.logs.maxBytes, keep: record.spec.logs.keep })
  }

  private assertRunning (): void {
    if (!this.running) throw new NotRunning('the allocation runtime is not running')
  }
}

/** A workload is claimed by its executor, allocation and id (pid or container id). */
const claimKey = (r: WorkloadRef): string => `${r.executor}\0${r.allocationId}\0${r.id}`
