import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { open, rename, rm, stat, truncate } from 'node:fs/promises'
import { join } from 'node:path'
import type { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { isDmsError } from '../../lib/errors.js'
import type { Logger } from '../../lib/log.js'
import type { DeploymentService, DeploymentView } from '../orchestrator/index.js'
import { isFinal } from '../orchestrator/index.js'
import {
  COLLECT_CHUNK_BYTES, EXIT_MARKER, MAX_COLLECT_READS, PART_BID_WINDOW_MS, PART_DEPLOY_TIMEOUT_MS, PART_MAX_PLACEMENTS,
  STDERR_TAIL_BYTES, WORKER_MAX_FAILURES
} from './constants.js'
import { partEnsembleText, type JobSpec } from './job-file.js'
import type { JobRecord, JobStatus, PartRecord, PartRun } from './schemas.js'
import { isJobFinal } from './schemas.js'

/** What one job's coordinator needs of its node; the job service provides it. */
export interface JobRunContext {
  record: JobRecord
  spec: JobSpec
  /** The job's directory at the origin: part outputs, stderr, the result. */
  dir: string
  deployments: DeploymentService
  /** Persists the record and wakes whoever follows the job. */
  save: () => Promise<void>
  /** The nodes that would run a part now (peer ids, this node first if it would), and why others would not. */
  probe: () => Promise<{ peers: string[], refusals: string[] }>
  log: Logger
  clock: () => number
  /** The run is over (its record final). */
  ended: () => void
}

const errorText = (err: unknown): string => isDmsError(err) ? `${err.name}: ${err.message}` : err instanceof Error ? err.message : String(err)
const short = (peer: string): string => peer.length > 16 ? `${peer.slice(0, 12)}…${peer.slice(-4)}` : peer
export const partFile = (dir: string, index: number, ext: 'out' | 'err'): string => join(dir, `part-${String(index).padStart(5, '0')}.${ext}`)
export const resultFile = (dir: string): string => join(dir, 'result')

/** A run in flight: its deployment, and how to call it off (the job cancelled, or another run of its part recorded first). */
interface LiveRun { part: number, run: PartRun, stop: AbortController }
type RunEnd = 'ok' | 'exit' | 'node' | 'cancelled' | 'duplicate'

/**
 * The coordinator of one job at its origin (specs/jobs.md, "Coordinator"): places the job (asks
 * which nodes would run a part), then one worker loop per node takes parts from the queue: a node
 * that finishes a part gets the next (so a slow node holds back only its own part), each part a
 * deployment of one task pinned to that node. When the queue is empty, idle nodes run a backup
 * copy of a part still running elsewhere; the first run to end with exit 0 is the part's result,
 * recorded once. Every change is persisted before the next step.
 */
export class JobRun {
  private readonly abort = new AbortController()
  private readonly live = new Map<string, LiveRun>()
  private readonly waiters = new Set<() => void>()
  private readonly alive = new Set<string>()
  private running: Promise<void> | undefined
  private cancelAsked = false
  private failure: { part?: number, reason: string } | undefined
  private finished = false

  constructor (private readonly c: JobRunContext) {}

  get record (): JobRecord { return this.c.record }

  start (): void {
    this.running ??= this.main().catch((err: unknown) => { this.c.log.error({ err, job: this.record.id }, 'job coordinator failed unexpectedly') })
  }

  /** Everything stops and is released on every node; answers once that is done. */
  async cancel (): Promise<void> {
    if (isJobFinal(this.record.status)) return
    this.cancelAsked = true
    this.abort.abort()
    this.wakeAll()
    await this.running
    if (!isJobFinal(this.record.status)) await this.transition('Cancelled', 'cancelled on request; every part was stopped and released')
    this.finish()
  }

  /** The node stops: runs in flight are released (they run again when the job resumes). */
  async stop (): Promise<void> {
    this.abort.abort()
    this.wakeAll()
    await this.running
  }

  private get aborted (): boolean { return this.abort.signal.aborted }

  private async main (): Promise<void> {
    const r = this.record
    try {
      if (r.status === 'Placing' || r.status === 'Running') await this.runParts()
      if (this.aborted) return
      if (this.failure !== undefined) {
        if (this.failure.part !== undefined) r.failedPart = this.failure.part
        await this.transition('Failed', this.failure.reason)
        return
      }
      if (r.status === 'Running' || r.status === 'Reducing') await this.reduce()
    } catch (err) {
      if (this.aborted) return
      await this.transition('Failed', errorText(err))
    } finally {
      if (isJobFinal(r.status)) this.finish()
    }
  }

  private finish (): void {
    if (this.finished) return
    this.finished = true
    this.c.ended()
  }

  // ---- the work queue ----

  private async runParts (): Promise<void> {
    const r = this.record
    // resumed after a restart: runs that were in flight are gone with the node's coordinator
    for (const p of r.parts) {
      for (const run of p.runs.filter(x => x.outcome === undefined)) {
        run.outcome = 'cancelled'
        run.reason = 'the origin restarted while it ran'
        await this.c.deployments.shutdown(run.deployment).catch(() => {})
      }
      if (p.status === 'running') p.status = 'pending'
    }
    await this.transition('Placing', 'asking nodes whether they would run a part')
    const { peers, refusals } = await this.c.probe()
    if (this.aborted) return
    const workers = peers.slice(0, this.c.spec.parallelism)
    if (workers.length === 0) throw new Error(`no node would run a part: ${refusals.join('; ') || 'no node answered'}`)
    r.workers = workers
    for (const w of workers) this.alive.add(w)
    const left = r.parts.filter(p => p.status !== 'done').length
    await this.transition('Running', `${left} of ${r.parts.length} parts to run on ${workers.length} node(s)`)
    await Promise.all(workers.map(async w => { await this.work(w) }))
  }

  private allDone (): boolean { return this.record.parts.every(p => p.status === 'done') }

  /** One node's loop: the next part, until none is left (or the job failed, was cancelled). */
  private async work (peer: string): Promise<void> {
    let failures = 0
    // bounded: every pass runs a part or waits for a change, and parts run a bounded number of times
    for (let i = 0; i < 100_000; i++) {
      if (this.aborted || this.failure !== undefined || this.allDone()) return
      const next = this.next(peer)
      if (next === undefined) {
        if (this.record.parts.every(p => p.status === 'done' || p.status === 'failed')) return
        await this.changed()
        continue
      }
      const end = await this.runPart(peer, next)
      if (end === 'node' && ++failures >= WORKER_MAX_FAILURES) {
        this.alive.delete(peer)
        this.c.log.warn({ job: this.record.id, peer }, 'a node failed parts of a job twice: it takes no more of them')
        if (this.alive.size === 0 && !this.allDone()) this.failure ??= { reason: `every node of the job failed its parts (last: ${short(peer)})` }
        this.wakeAll()
        return
      }
    }
  }

  /**
   * The part `peer` runs next: a pending one (not the one that just failed on it, when other nodes
   * are there to take it); else, with `backup`, a copy of the part running longest elsewhere.
   */
  private next (peer: string): number | undefined {
    const pending = this.record.parts.filter(p => p.status === 'pending')
    const fresh = pending.find(p => p.runs.at(-1)?.peer !== peer || this.alive.size === 1) ?? pending[0]
    if (fresh !== undefined) return fresh.index
    if (!this.c.spec.backup) return undefined
    let best: { part: number, since: number } | undefined
    for (const l of this.live.values()) {
      const runs = [...this.live.values()].filter(x => x.part === l.part)
      if (runs.length > 1 || runs.some(x => x.run.peer === peer)) continue
      if (best === undefined || l.run.startedAt < best.since) best = { part: l.part, since: l.run.startedAt }
    }
    return best?.part
  }

  /** Runs part `index` on `peer` once, from its deployment to its recorded result. */
  private async runPart (peer: string, index: number): Promise<RunEnd> {
    const part = this.record.parts[index]
    const stop = new AbortController()
    // claimed before the first await: no other worker takes the part (or backs it up) meanwhile
    const run: PartRun = { attempt: part.runs.length + 1, peer, deployment: '', startedAt: this.c.clock() }
    part.runs.push(run)
    part.status = 'running'
    const key = `${index}/${run.attempt}`
    this.live.set(key, { part: index, run, stop })
    try {
      run.deployment = (await this.c.deployments.create(this.record.owner, {
        ensemble: partEnsembleText(this.c.spec, index, peer), timeoutMs: PART_DEPLOY_TIMEOUT_MS, bidWindowMs: PART_BID_WINDOW_MS
      })).ensembleId
    } catch (err) {
      this.live.delete(key)
      part.runs.pop()
      if (part.status === 'running' && ![...this.live.values()].some(x => x.part === index)) part.status = 'pending'
      this.failure ??= { part: index, reason: `part ${index} could not be deployed: ${errorText(err)}` }
      this.wakeAll()
      return 'node'
    }
    const deployment = run.deployment
    await this.save()
    let end: RunEnd = 'node'
    try {
      end = await this.follow(part, run, stop.signal)
    } catch (err) {
      run.reason = errorText(err)
      end = 'node'
    } finally {
      this.live.delete(key)
      // the provider releases everything of the part (its output was read already)
      await this.c.deployments.shutdown(deployment).catch((err: unknown) => { this.c.log.warn({ err, job: this.record.id, deployment }, 'could not shut a part\'s deployment down') })
    }
    run.outcome = end
    run.endedAt = this.c.clock()
    if (end === 'node') {
      part.placements++
      if (part.placements >= PART_MAX_PLACEMENTS) this.failure ??= { part: index, reason: `part ${index}: its node failed it ${part.placements} times (last on ${short(peer)}: ${run.reason ?? 'unknown'})` }
    }
    if (part.status === 'running' && ![...this.live.values()].some(x => x.part === index)) part.status = 'pending'
    // the job failed: every other run is called off (each releases its deployment as it ends)
    if (this.failure !== undefined) for (const other of this.live.values()) other.stop.abort()
    await this.save()
    this.wakeAll()
    return end
  }

  /** Follows one run to its end and records what it produced. */
  private async follow (part: PartRecord, run: PartRun, stop: AbortSignal): Promise<RunEnd> {
    const timeout = AbortSignal.timeout(this.c.spec.partTimeoutMs)
    const signal = AbortSignal.any([stop, this.abort.signal, timeout])
    const v = await this.untilEnded(run.deployment, signal)
    if (stop.aborted || this.aborted) { run.reason = this.aborted ? 'the job stopped' : 'another run of the part was recorded first'; return 'cancelled' }
    if (timeout.aborted) { run.reason = `still running after ${this.c.spec.partTimeoutMs / 1000} s`; return 'node' }
    if (v.status === 'Failed') { run.reason = v.reason; return 'node' }
    const a = v.allocations.part
    if (a?.status !== 'completed') { run.reason = `its allocation ended ${a?.status ?? 'unplaced'}: ${v.reason}`; return 'node' }
    const tmp = join(this.c.dir, `.run-${part.index}-${run.attempt}`)
    try {
      const out = await this.collect(run.deployment, 'stdout', `${tmp}.out`)
      await this.collect(run.deployment, 'stderr', `${tmp}.err`)
      const exit = await stripExit(`${tmp}.err`)
      if (exit === undefined) { run.reason = 'the part wrapper reported no exit status (its node stopped it?)'; return 'node' }
      run.exitCode = exit
      if (part.result !== undefined || part.status === 'done') return 'duplicate'
      if (exit !== 0) {
        part.exits++
        part.stderrTail = await tail(`${tmp}.err`, STDERR_TAIL_BYTES)
        await rename(`${tmp}.err`, partFile(this.c.dir, part.index, 'err'))
        run.reason = `exit ${exit}`
        if (part.exits > this.c.spec.retries) {
          part.status = 'failed'
          this.failure ??= { part: part.index, reason: `part ${part.index} exited ${exit} ${part.exits} time(s) (retries: ${this.c.spec.retries}); its stderr ends: ${part.stderrTail.slice(-500)}` }
        }
        return 'exit'
      }
      // recorded once: the first run to end with exit 0 (any other of the part is called off)
      await rename(`${tmp}.out`, partFile(this.c.dir, part.index, 'out'))
      await rename(`${tmp}.err`, partFile(this.c.dir, part.index, 'err'))
      part.result = { bytes: out.bytes, sha256: out.sha256, peer: run.peer, attempt: run.attempt, at: this.c.clock() }
      part.status = 'done'
      for (const other of this.live.values()) if (other.part === part.index && other.run !== run) other.stop.abort()
      return 'ok'
    } finally {
      await rm(`${tmp}.out`, { force: true })
      await rm(`${tmp}.err`, { force: true })
    }
  }

  /** Long polls the part's deployment until it is final or `signal` ends the wait. */
  private async untilEnded (id: string, signal: AbortSignal): Promise<DeploymentView> {
    let v = await this.c.deployments.status(id)
    for (let i = 0; i < 100_000 && !isFinal(v.status) && !signal.aborted; i++) {
      v = await this.c.deployments.status(id, { after: v.transitionCount, signal })
    }
    return v
  }

  /** Reads one stream of the part's output into `path`, a chunk at a time; its size and sha256. */
  private async collect (deployment: string, stream: 'stdout' | 'stderr', path: string): Promise<{ bytes: number, sha256: string }> {
    const hash = createHash('sha256')
    const fh = await open(path, 'w')
    let bytes = 0
    try {
      let offset = 0
      for (let i = 0; i < MAX_COLLECT_READS; i++) {
        const r = await this.c.deployments.logs(deployment, 'part', { stream, offset, maxBytes: COLLECT_CHUNK_BYTES, wait: false, timeoutMs: 10_000 }) as { data: string, nextOffset: number, eof: boolean, skipped?: number }
        if ((r.skipped ?? 0) > 0) throw new Error(`${r.skipped} bytes of the part's ${stream} were rotated away before they were read`)
        const buf = Buffer.from(r.data, 'utf8')
        if (buf.length > 0) { await fh.write(buf); hash.update(buf); bytes += buf.length }
        if (r.eof || r.nextOffset === offset) break
        offset = r.nextOffset
      }
    } finally {
      await fh.close()
    }
    return { bytes, sha256: hash.digest('hex') }
  }

  // ---- reduce ----

  /** The parts' outputs in part order, through the reduce command (or concatenated), into the result. */
  private async reduce (): Promise<void> {
    const spec = this.c.spec
    const out = resultFile(this.c.dir)
    const inputs = this.record.parts.map(p => partFile(this.c.dir, p.index, 'out'))
    if (spec.reduce === undefined) {
      await this.transition('Reducing', 'concatenating the parts\' outputs in part order')
      await concat(inputs, out)
    } else {
      await this.transition('Reducing', `reducing ${inputs.length} outputs at the origin`)
      const errPath = join(this.c.dir, 'reduce.err')
      const code = await runReduce(spec.reduce.command, inputs, out, errPath, { cwd: this.c.dir, timeoutMs: spec.reduce.timeoutMs, signal: this.abort.signal, env: { DMS_PART_COUNT: String(inputs.length), DMS_JOB_ID: this.record.id } })
      if (this.aborted) return
      if (code !== 0) throw new Error(`the reduce step exited ${code}; its stderr ends: ${(await tail(errPath, 500)).trim()}`)
    }
    const { bytes, sha256 } = await digest(out)
    this.record.result = { bytes, sha256 }
    await this.transition('Completed', `every part done${spec.reduce !== undefined ? ' and reduced' : ''}: ${bytes} bytes, sha256 ${sha256.slice(0, 16)}…`)
  }

  // ---- plumbing ----

  private async changed (): Promise<void> {
    await new Promise<void>(resolve => { this.waiters.add(resolve) })
  }

  private wakeAll (): void {
    for (const w of [...this.waiters]) { this.waiters.delete(w); w() }
  }

  private async transition (status: JobStatus, reason: string): Promise<void> {
    if (isJobFinal(this.record.status)) return
    if (this.cancelAsked && status !== 'Cancelled') return
    const r = this.record
    r.status = status
    r.reason = reason
    r.transitions.push({ at: this.c.clock(), status, reason })
    r.transitionCount++
    if (isJobFinal(status)) r.endedAt = this.c.clock()
    await this.save()
  }

  private async save (): Promise<void> { await this.c.save() }
}

/** Removes the wrapper's last stderr line (`dms-part-exit=N`) and answers N; undefined if absent. */
async function stripExit (path: string): Promise<number | undefined> {
  const size = (await stat(path)).size
  const end = await tail(path, 64)
  const m = new RegExp(`\\n${EXIT_MARKER}(\\d+)\\n$`).exec(end)
  if (m === null) return undefined
  await truncate(path, size - Buffer.byteLength(m[0]))
  return Number(m[1])
}

/** The last `n` bytes of a file, as text. */
export async function tail (path: string, n: number): Promise<string> {
  const fh = await open(path, 'r')
  try {
    const size = (await fh.stat()).size
    const len = Math.min(n, size)
    const buf = Buffer.alloc(len)
    await fh.read(buf, 0, len, size - len)
    return buf.toString('utf8')
  } finally {
    await fh.close()
  }
}

async function digest (path: string): Promise<{ bytes: number, sha256: string }> {
  const hash = createHash('sha256')
  let bytes = 0
  await pipeline(createReadStream(path), async function * (src: AsyncIterable<Buffer>) {
    for await (const chunk of src) { hash.update(chunk); bytes += chunk.length }
  })
  return { bytes, sha256: hash.digest('hex') }
}

async function concat (inputs: string[], out: string): Promise<void> {
  const w = createWriteStream(out)
  for (const f of inputs) await pipeline(createReadStream(f), w, { end: false })
  await new Promise<void>((resolve, reject) => { w.end((err?: Error | null) => { if (err != null) reject(err); else resolve() }) })
}

/**
 * Runs the reduce command at the origin with the parts' outputs on stdin, in part order (a file
 * at a time: bounded memory), stdout into the result, stderr beside it; its exit code.
 */
async function runReduce (command: string[], inputs: string[], out: string, err: string, o: { cwd: string, timeoutMs: number, signal: AbortSignal, env: Record<string, string> }): Promise<number> {
  const [stdout, stderr] = [await open(out, 'w'), await open(err, 'w')]
  try {
    const child = spawn(command[0], command.slice(1), {
      cwd: o.cwd,
      env: { PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', ...o.env },
      stdio: ['pipe', stdout.fd, stderr.fd],
      signal: AbortSignal.any([o.signal, AbortSignal.timeout(o.timeoutMs)]),
      killSignal: 'SIGKILL'
    })
    const exited = new Promise<number>(resolve => {
      child.on('error', () => { resolve(-1) })
      child.on('close', (code, sig) => { resolve(code ?? (sig !== null ? 128 : -1)) })
    })
    const stdin = child.stdin as Writable
    // a reduce that stops reading early (EPIPE) is judged by its exit code, not by our write
    stdin.on('error', () => {})
    try {
      for (const f of inputs) await pipeline(createReadStream(f), stdin, { end: false })
    } catch { /* judged by the exit code */ }
    stdin.end()
    return await exited
  } finally {
    await stdout.close()
    await stderr.close()
  }
}
