import { createHash, randomUUID } from 'node:crypto'
import { mkdir, open } from 'node:fs/promises'
import { join } from 'node:path'
import type { Actor } from '../../actor/actor.js'
import { InvalidState, NotFound, NotRunning, BadRequest } from '../../lib/errors.js'
import type { Logger } from '../../lib/log.js'
import type { Db } from '../../store/db.js'
import { planEnsemble } from '../orchestrator/ensemble.js'
import type { BidRequest, DeploymentService, DirectReply, NodeAsk } from '../orchestrator/index.js'
import { jsonSublevel, parsedRecords, type JsonSublevel } from '../store.js'
import { JOBS_DIR, JOBS_SUBLEVEL, MAX_JOB_TRANSITIONS, PROBE_CALL_MS } from './constants.js'
import { parseJob, partEnsemble, type JobSpec } from './job-file.js'
import { JobRun, partFile, resultFile } from './run.js'
import { JobRecord, isJobFinal, type FileChunk, type JobInput, type JobView } from './schemas.js'

export * from './schemas.js'
export { parseJob, type JobSpec } from './job-file.js'

export interface NewJob {
  /** The job file's text (YAML, specs/jobs.md). */
  job: string
  /** The files `split.directory` / `split.files` name, read by the CLI. */
  inputs?: JobInput[]
}

/** What `read` serves: the result, or one part's output or stderr. */
export type JobFileKind = { what: 'result' } | { what: 'output' | 'stderr', part: number }

/** Jobs this node coordinates (specs/jobs.md). */
export interface JobService {
  start: () => Promise<void>
  stop: () => Promise<void>
  create: (owner: string, req: NewJob) => Promise<{ id: string }>
  list: () => JobView[]
  /** The job; with `after` (a version), waits (until `signal`) for a later change. */
  status: (id: string, opts?: { after?: number, signal?: AbortSignal }) => Promise<JobView>
  /** A chunk of a file the job keeps at the origin. */
  read: (id: string, which: JobFileKind, offset: number, maxBytes: number) => Promise<FileChunk>
  cancel: (id: string) => Promise<JobView>
}

export interface JobComponents {
  db: Db
  log: Logger
  clock?: () => number
  /** The data dir: outputs go under `jobs/<id>/`. */
  dataDir: string
  deployments: DeploymentService
  /** The node's root actor: asks candidates whether they would run a part. */
  root: () => Actor
  selfPeer: string
  connectedPeers: () => Promise<string[]>
}

export function createJobService (c: JobComponents): JobService {
  return new Jobs(c)
}

const iso = (ms: number): string => new Date(ms).toISOString()

class Jobs implements JobService {
  private readonly sub: JsonSublevel
  private readonly records = new Map<string, JobRecord>()
  private readonly live = new Map<string, JobRun>()
  private readonly waiters = new Set<() => void>()
  private readonly clock: () => number
  private running = false

  constructor (private readonly c: JobComponents) {
    this.sub = jsonSublevel(c.db, JOBS_SUBLEVEL)
    this.clock = c.clock ?? Date.now
  }

  async start (): Promise<void> {
    for await (const r of parsedRecords(this.sub, JobRecord, this.c.log, 'job')) this.records.set(r.id, r)
    this.running = true
    for (const r of this.records.values()) if (!isJobFinal(r.status)) this.resume(r)
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    await Promise.all([...this.live.values()].map(async run => { await run.stop() }))
    this.live.clear()
    for (const w of [...this.waiters]) w()
  }

  async create (owner: string, req: NewJob): Promise<{ id: string }> {
    if (!this.running) throw new NotRunning('jobs are not running on this node')
    const spec = parseJob(req.job, req.inputs)
    const now = this.clock()
    const id = createHash('sha256').update(`job:${this.c.selfPeer}${randomUUID()}`).digest('hex')
    await mkdir(this.dir(id), { recursive: true })
    const record: JobRecord = {
      id,
      owner,
      spec: spec as unknown as Record<string, unknown>,
      status: 'Placing',
      reason: 'created',
      createdAt: now,
      version: 1,
      transitions: [{ at: now, status: 'Placing', reason: 'created' }],
      transitionCount: 1,
      workers: [],
      parts: spec.inputs.map((_, index) => ({ index, status: 'pending', exits: 0, placements: 0, runs: [] }))
    }
    this.records.set(id, record)
    await this.save(record)
    this.resume(record)
    return { id }
  }

  private resume (record: JobRecord): void {
    const spec = record.spec as unknown as JobSpec
    const run: JobRun = new JobRun({
      record,
      spec,
      dir: this.dir(record.id),
      deployments: this.c.deployments,
      save: async () => { await this.save(record) },
      probe: async () => await this.probe(record.id, spec),
      log: this.c.log,
      clock: this.clock,
      ended: () => { this.live.delete(record.id) }
    })
    this.live.set(record.id, run)
    run.start()
  }

  /**
   * Which nodes would run a part now: this node and every connected peer are asked directly (as
   * a deployment asks when gossip has not reached everyone). Nothing is reserved by asking.
   */
  private async probe (id: string, spec: JobSpec): Promise<{ peers: string[], refusals: string[] }> {
    const plan = planEnsemble(partEnsemble(spec, 0, undefined)).nodes[0]
    const ask: NodeAsk = { name: 'worker', resources: plan.resources, executors: plan.executors, ports: [], labels: {} }
    const req: BidRequest = { ensembleId: `job-${id.slice(0, 40)}`, orchestrator: this.c.root().handle, nodes: [ask] }
    const others = (await this.c.connectedPeers()).filter(p => p !== this.c.selfPeer).sort()
    const answers = await Promise.all([this.c.selfPeer, ...others].map(async (peer): Promise<{ peer: string, reply?: DirectReply, error?: string }> => {
      try {
        const reply = peer === this.c.selfPeer
          ? await this.c.deployments.answer(req)
          : await this.c.root().invoke<DirectReply>(peer, '/dms/deployment/request/direct', req, { timeout: PROBE_CALL_MS })
        return { peer, reply }
      } catch (err) {
        return { peer, error: err instanceof Error ? err.message : String(err) }
      }
    }))
    const peers = answers.filter(a => a.reply?.bids.some(b => b.peer === a.peer) === true).map(a => a.peer)
    const refusals = answers.filter(a => !peers.includes(a.peer)).map(a => `${a.peer}: ${a.error ?? a.reply?.refusals.map(r => r.reason).join(', ') ?? 'no bid'}`)
    return { peers, refusals }
  }

  list (): JobView[] {
    return [...this.records.values()].sort((a, b) => a.createdAt - b.createdAt).map(r => view(r))
  }

  async status (id: string, opts: { after?: number, signal?: AbortSignal } = {}): Promise<JobView> {
    this.get(id)
    const after = opts.after
    if (after !== undefined && opts.signal !== undefined) {
      const signal = opts.signal
      await new Promise<void>(resolve => {
        const check = (): void => {
          const cur = this.records.get(id)
          if (cur === undefined || cur.version > after || isJobFinal(cur.status) || signal.aborted || !this.running) { this.waiters.delete(check); signal.removeEventListener('abort', check); resolve() }
        }
        this.waiters.add(check)
        signal.addEventListener('abort', check, { once: true })
        check()
      })
    }
    return view(this.get(id))
  }

  async read (id: string, which: JobFileKind, offset: number, maxBytes: number): Promise<FileChunk> {
    const r = this.get(id)
    let path: string
    let sha256: string | undefined
    if (which.what === 'result') {
      if (r.status !== 'Completed' || r.result === undefined) throw new InvalidState(`job ${id} is ${r.status}: it has no result${r.status === 'Failed' ? ` (${r.reason})` : ' yet'}`, { id, status: r.status })
      path = resultFile(this.dir(id))
      sha256 = r.result.sha256
    } else {
      const p = r.parts[which.part]
      if (p === undefined) throw new NotFound(`job ${id} has parts 0..${r.parts.length - 1}, not ${which.part}`, { part: which.part })
      if (which.what === 'output' && p.result === undefined) throw new InvalidState(`part ${which.part} of job ${id} is ${p.status}: it has no output recorded`, { part: which.part })
      path = partFile(this.dir(id), which.part, which.what === 'output' ? 'out' : 'err')
      if (which.what === 'output') sha256 = p.result?.sha256
    }
    let fh
    try { fh = await open(path, 'r') } catch { throw new NotFound(`job ${id}: nothing kept for ${which.what}${which.what !== 'result' ? ` of part ${which.part}` : ''} (a part that never ended has no stderr here)`) }
    try {
      const size = (await fh.stat()).size
      const len = Math.max(0, Math.min(maxBytes, size - offset))
      const buf = Buffer.alloc(len)
      if (len > 0) await fh.read(buf, 0, len, offset)
      const chunk: FileChunk = { data: buf.toString('base64'), offset, nextOffset: offset + len, size, eof: offset + len >= size }
      if (sha256 !== undefined) chunk.sha256 = sha256
      return chunk
    } finally {
      await fh.close()
    }
  }

  async cancel (id: string): Promise<JobView> {
    const r = this.get(id)
    const run = this.live.get(id)
    if (run !== undefined) await run.cancel()
    else if (!isJobFinal(r.status)) throw new InvalidState(`job ${id} is ${r.status} but has no coordinator running here`)
    return view(r)
  }

  private dir (id: string): string {
    if (!/^[0-9a-f]{64}$/.test(id)) throw new BadRequest(`not a job id: ${id}`)
    return join(this.c.dataDir, JOBS_DIR, id)
  }

  private get (id: string): JobRecord {
    const r = this.records.get(id)
    if (r === undefined) throw new NotFound(`no job ${id} on this node`, { id })
    return r
  }

  private async save (r: JobRecord): Promise<void> {
    if (r.transitions.length > MAX_JOB_TRANSITIONS) r.transitions.splice(0, r.transitions.length - MAX_JOB_TRANSITIONS)
    r.version++
    await this.sub.put(r.id, r)
    for (const w of [...this.waiters]) w()
  }
}

function view (r: JobRecord): JobView {
  const spec = r.spec as unknown as JobSpec
  const runs = r.parts.reduce((n, p) => n + p.runs.length, 0)
  const duplicates = r.parts.reduce((n, p) => n + p.runs.filter(x => x.outcome === 'duplicate').length, 0)
  const count = (s: string): number => r.parts.filter(p => p.status === s).length
  const v: JobView = {
    id: r.id,
    status: r.status,
    reason: r.reason,
    owner: r.owner,
    createdAt: iso(r.createdAt),
    version: r.version,
    transitions: r.transitions.map(t => ({ at: iso(t.at), status: t.status, reason: t.reason })),
    transitionCount: r.transitionCount,
    workers: r.workers,
    counts: { parts: r.parts.length, pending: count('pending'), running: count('running'), done: count('done'), failed: count('failed'), runs, duplicates },
    parts: r.parts.map(p => {
      const x: JobView['parts'][number] = { index: p.index, status: p.status, runs: p.runs.length, exits: p.exits, placements: p.placements }
      const peer = p.result?.peer ?? p.runs.at(-1)?.peer
      if (peer !== undefined) x.peer = peer
      if (p.result !== undefined) {
        x.bytes = p.result.bytes
        x.sha256 = p.result.sha256
        const run = p.runs.find(r => r.attempt === p.result?.attempt)
        if (run !== undefined) x.recordedMs = p.result.at - run.startedAt
      }
      return x
    })
  }
  if (spec.name !== undefined) v.name = spec.name
  if (r.endedAt !== undefined) v.endedAt = iso(r.endedAt)
  if (r.result !== undefined) v.result = r.result
  if (r.failedPart !== undefined) {
    v.failedPart = r.failedPart
    const tail = r.parts[r.failedPart]?.stderrTail
    if (tail !== undefined) v.stderrTail = tail
  }
  return v
}
