import { randomBytes } from 'node:crypto'
import type { StreamService } from '../../stream/index.js'
import type { Channel, ChannelService } from '../../channel/index.js'
import { z } from 'zod'
import type { Actor } from '../../actor/actor.js'
import type { AnyBehavior } from '../../actor/behavior.js'
import type { ActorInit } from '../../actor/system.js'
import type { Handle } from '../../actor/types.js'
import type { ActorKeys } from '../../identity/actor-keys.js'
import type { Did } from '../../identity/did.js'
import type { Identity } from '../../identity/identity.js'
import { BadRequest, Conflict, DmsError, InvalidState, NotFound, NotRunning, Unauthorized } from '../../lib/errors.js'
import type { Logger } from '../../lib/log.js'
import type { ProofSource } from '../../security/authorizer.js'
import { covers } from '../../security/paths.js'
import { decodeToken, issueToken } from '../../security/ucan.js'
import type { Db } from '../../store/db.js'
import {
  badRequestFrom, isTerminal, type AllocationRecord, type AllocationRuntime, type LogChunk, type LogStream
} from '../allocations/index.js'
import type { PortAllocator } from '../ports/index.js'
import { ResourceVectorSchema, ZERO, type ResourceManager } from '../resources/index.js'
import { createSerial, type Serial } from '../serial.js'
import { jsonSublevel, parsedRecords, type JsonSublevel } from '../store.js'
import {
  ALLOCATION_CAPABILITY, ALLOCATION_DELEGATION_MS, ALLOCATION_INBOX_PREFIX, COMMIT_SWEEP_MS, COMMITS_SUBLEVEL, LOCAL_ENSEMBLE_PREFIX,
  STATUS_CHANNEL, STATUS_CHANNEL_CAPS, STATUS_REPORTED_SUBLEVEL
} from './constants.js'
import {
  AllocateRequest, CommitRequest, ContainerStartRequest, HandleSchema, PortGiven,
  type AllocateReply, type AllocationView, type CommitReply, type RevertReply, type StatusReport
} from './schemas.js'

export * from './schemas.js'
export { ALLOCATION_CAPABILITY, STATUS_CHANNEL, STATUS_CHANNEL_CAPS } from './constants.js'

/**
 * What one allocation actor's behaviours act on: its own allocation, nothing else.
 * (`/dms/allocation/*` on the actor whose inbox is `alloc/<id>`.)
 */
export interface AllocationControl {
  readonly id: string
  view: () => AllocationView
  start: () => Promise<AllocationView>
  stop: (opts: { graceMs?: number }) => Promise<AllocationView>
  restart: () => Promise<AllocationView>
  /** Resolves once the allocation ended (completed, failed, stopped), or when `signal` aborts. */
  waitForEnd: (signal: AbortSignal) => Promise<AllocationView>
  /** A chunk of its output; with `wait`, a long poll until there is more, it ended, or `signal`. */
  logs: (o: { stream: LogStream, offset: number, maxBytes: number, wait: boolean, signal: AbortSignal }) => Promise<LogChunk & { ended: boolean }>
}

/** The provider side of deployments and the node's allocations, as behaviours use them. */
export interface ProviderService {
  start: () => Promise<void>
  stop: () => Promise<void>
  commit: (owner: string, request: unknown) => Promise<CommitReply>
  allocate: (owner: string, request: unknown) => Promise<AllocateReply>
  revert: (owner: string, ensembleId: string) => Promise<RevertReply>
  list: (filter?: { id?: string, executor?: 'process' | 'docker' }) => AllocationView[]
  /** Node-level controls by allocation id (the capability is the node's to grant, not the owner's). */
  stopAllocation: (id: string, opts?: { graceMs?: number }) => Promise<AllocationView>
  restartAllocation: (id: string) => Promise<AllocationView>
  /** commit + allocate + start of one docker allocation on this node. */
  startContainer: (owner: string, request: unknown) => Promise<AllocationView>
  /** Frees what an allocation id holds in the ledger and the port table (idempotent). */
  releaseReservation: (id: string) => Promise<void>
  /** Allocated commits made by an orchestrator elsewhere (to ask it, after a restart, whether they are still wanted). */
  remoteCommits: () => Array<{ ensembleId: string, owner: string, orchestrator?: Handle }>
}

export interface ProviderComponents {
  db: Db
  log: Logger
  clock?: () => number
  /** Starts an allocation actor on this node (the actor system's `spawn`). */
  spawn: (init: ActorInit) => Actor
  /** The node's key: it delegates `/dms/allocation` to each allocation actor at spawn. */
  node: Identity
  actorKeys: ActorKeys
  /** The ledger and the port table as the node's behaviours see them (changes go to their owners). */
  resources: ResourceManager
  ports: PortAllocator
  runtime: AllocationRuntime
  /** The behaviours every allocation actor answers (`/dms/allocation/*`). */
  allocationBehaviors: readonly AnyBehavior[]
  /** The node's streams (made after the provider): allocation actors accept log follows on them. */
  streams: () => StreamService
  /** The node's channels (made after the provider): allocation actors push their status on them. Absent: nothing is pushed. */
  channels?: () => ChannelService
}

const CommitRecord = z.object({
  ensembleId: z.string(),
  /** The DID that made the commit: only it may allocate or revert it. */
  owner: z.string(),
  createdAt: z.number(),
  expiresAt: z.number(),
  allocated: z.boolean(),
  orchestrator: HandleSchema.optional(),
  /** The orchestrator's node's grant of the status channel (CommitRequest.statusGrant). */
  statusGrant: z.string().optional(),
  allocations: z.array(z.object({ name: z.string(), id: z.string(), resources: ResourceVectorSchema, ports: z.array(PortGiven) }))
})
type CommitRecord = z.infer<typeof CommitRecord>

const iso = (ms: number | undefined): string | undefined => ms === undefined ? undefined : new Date(ms).toISOString()

export function createProviderService (c: ProviderComponents): ProviderService {
  return new Provider(c)
}

/**
 * The provider side (specs/allocations.md, "Deployments on a provider"): commits (reservations of
 * resources and ports with an expiry, owned by the DID that made them), allocation actors (one per
 * allocation, its own key, controlled by the commit's owner, holding a delegation of
 * `/dms/allocation` from the node), and revert. Operations on one ensemble run one at a time.
 */
class Provider implements ProviderService {
  private readonly sub: JsonSublevel
  private readonly reported: JsonSublevel
  /** Per allocation pushing its status: its channel to the orchestrator's node and its listener. */
  private readonly reporters = new Map<string, { channel: Channel, actor: Actor, to: string, off: () => void }>()
  private readonly commits = new Map<string, CommitRecord>()
  private readonly actors = new Map<string, Actor>()
  private readonly locks = new Map<string, { serial: Serial, users: number }>()
  private readonly clock: () => number
  private readonly log: Logger
  private timer: NodeJS.Timeout | undefined
  private running = false

  constructor (private readonly c: ProviderComponents) {
    this.sub = jsonSublevel(c.db, COMMITS_SUBLEVEL)
    this.reported = jsonSublevel(c.db, STATUS_REPORTED_SUBLEVEL)
    this.clock = c.clock ?? Date.now
    this.log = c.log
  }

  async start (): Promise<void> {
    for await (const r of parsedRecords(this.sub, CommitRecord, this.log, 'commit')) this.commits.set(r.ensembleId, r)
    // Recovery of the workloads first (re-adopt, fail, release, stop orphans), then their actors.
    await this.c.runtime.start()
    for (const record of this.c.runtime.list()) {
      const commit = this.commitOf(record.id)
      if (commit === undefined) {
        this.log.warn({ allocation: record.id }, 'an allocation with no commit: it keeps running, owned by the node')
      }
      await this.spawn(record.id, commit?.owner ?? this.c.node.did)
    }
    this.running = true
    this.timer = setInterval(() => { void this.sweep() }, COMMIT_SWEEP_MS)
    this.timer.unref()
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    clearInterval(this.timer)
    this.timer = undefined
    // the channels stay on disk: the next start opens them again and sends what was not acknowledged
    for (const r of this.reporters.values()) { r.off(); r.channel.close() }
    this.reporters.clear()
    await Promise.all([...this.actors.values()].map(async a => { await a.stop('refuse') }))
    this.actors.clear()
    // Workloads keep running; the next start re-adopts them.
    await this.c.runtime.stop()
  }

  // ---- deployments ----

  async commit (owner: string, request: unknown): Promise<CommitReply> {
    const req = parse(CommitRequest, request, 'request')
    return await this.locked(req.ensembleId, async () => {
      this.assertRunning()
      if (this.commits.has(req.ensembleId)) {
        const held = this.commits.get(req.ensembleId) as CommitRecord
        if (held.owner !== owner) throw notOwner(req.ensembleId)
        throw new Conflict(`ensemble ${req.ensembleId} is already committed here; revert it first`, { ensembleId: req.ensembleId })
      }
      const names = new Set<string>()
      for (const a of req.allocations) {
        if (names.has(a.name)) throw new BadRequest(`allocation ${a.name} is named twice`, { field: 'allocations.name', name: a.name })
        names.add(a.name)
      }
      const now = this.clock()
      const expiresAt = now + req.ttlMs
      const done: CommitRecord['allocations'] = req.allocations.map(a => ({ name: a.name, id: `${req.ensembleId}.${a.name}`, resources: ZERO, ports: [] }))
      // The record goes first: should the daemon die half-way, the commit is found at the next
      // start, unallocated, and released when it expires (ports included, which never expire).
      const record: CommitRecord = { ensembleId: req.ensembleId, owner, createdAt: now, expiresAt, allocated: false, allocations: done }
      if (req.orchestrator !== undefined) record.orchestrator = req.orchestrator
      if (req.statusGrant !== undefined && req.orchestrator !== undefined) record.statusGrant = req.statusGrant
      await this.sub.put(req.ensembleId, record)
      try {
        // one ledger operation for the whole commit: all reservations or none
        const reservations = await this.c.resources.reserveAll(done.map((d, i) => ({ id: d.id, request: req.allocations[i].resources })), req.ttlMs)
        for (const [i, r] of reservations.entries()) done[i].resources = r.resources
        for (const [i, a] of req.allocations.entries()) {
          const fixed = a.ports.filter(p => p.public !== undefined).map(p => p.public as number)
          const leased = await this.c.ports.reserve(done[i].id, { ports: fixed, dynamic: a.ports.length - fixed.length })
          const free = leased.filter(p => !fixed.includes(p))
          done[i].ports = a.ports.map(p => ({ private: p.private, public: p.public ?? (free.shift() as number), protocol: p.protocol }))
        }
        await this.sub.put(req.ensembleId, record)
        this.commits.set(req.ensembleId, record)
      } catch (err) {
        // all or nothing: what was reserved for this commit is released before the refusal
        for (const d of done) await this.releaseReservation(d.id)
        await this.sub.del(req.ensembleId)
        throw err
      }
      return { ensembleId: req.ensembleId, expiresAt, allocations: done.map(d => ({ name: d.name, id: d.id, ports: d.ports })) }
    })
  }

  async allocate (owner: string, request: unknown): Promise<AllocateReply> {
    const req = parse(AllocateRequest, request, 'request')
    return await this.locked(req.ensembleId, async () => {
      this.assertRunning()
      const commit = this.commits.get(req.ensembleId)
      if (commit === undefined) throw new NotFound(`no commit for ensemble ${req.ensembleId} on this node (expired, reverted, or never made)`, { ensembleId: req.ensembleId })
      if (commit.owner !== owner) throw notOwner(req.ensembleId)
      if (commit.allocated) throw new Conflict(`ensemble ${req.ensembleId} is already allocated here`, { ensembleId: req.ensembleId })
      if (commit.expiresAt <= this.clock()) throw new InvalidState(`the commit of ensemble ${req.ensembleId} expired ${this.clock() - commit.expiresAt} ms ago`, { ensembleId: req.ensembleId })
      const asked = new Map(req.allocations.map(a => [a.name, a.spec]))
      const missing = commit.allocations.filter(a => !asked.has(a.name)).map(a => a.name)
      const unknown = [...asked.keys()].filter(n => !commit.allocations.some(a => a.name === n))
      if (missing.length > 0 || unknown.length > 0) {
        throw new BadRequest(`allocate names the committed allocations exactly: ${missing.length > 0 ? `missing ${missing.join(', ')}` : ''}${missing.length > 0 && unknown.length > 0 ? '; ' : ''}${unknown.length > 0 ? `not committed ${unknown.join(', ')}` : ''}`, { field: 'allocations', missing, unknown })
      }
      // Every spec is checked before anything changes: a bad one refuses the whole request.
      for (const a of commit.allocations) {
        const spec = asked.get(a.name) as Record<string, unknown>
        for (const fixed of ['resources', 'ports']) {
          if (fixed in spec) throw new BadRequest(`allocations.${a.name}.spec.${fixed} is fixed by the commit`, { field: `allocations.${a.name}.spec.${fixed}` })
        }
      }
      const created: string[] = []
      try {
        for (const a of commit.allocations) {
          const spec = { ...(asked.get(a.name) as Record<string, unknown>), resources: { cpuCores: a.resources.cpuCores, ramBytes: a.resources.ramBytes }, ports: a.ports.map(p => ({ host: p.public, container: p.private, protocol: p.protocol })) }
          await this.c.runtime.create(a.id, spec).catch((err: unknown) => { throw prefixField(err, `allocations.${a.name}`) })
          created.push(a.id)
        }
        for (const a of commit.allocations) await this.c.resources.commit(a.id)
        const record = { ...commit, allocated: true }
        await this.sub.put(req.ensembleId, record)
        this.commits.set(req.ensembleId, record)
      } catch (err) {
        for (const id of created) await this.c.runtime.removeAllocation(id).catch((e: unknown) => { this.log.error({ err: e, allocation: id }, 'could not undo a created allocation') })
        throw err
      }
      const out: AllocateReply['allocations'] = []
      for (const a of commit.allocations) out.push({ name: a.name, id: a.id, handle: (await this.spawn(a.id, owner)).handle })
      return { ensembleId: req.ensembleId, allocations: out }
    })
  }

  async revert (owner: string, ensembleId: string): Promise<RevertReply> {
    return await this.locked(ensembleId, async () => {
      this.assertRunning()
      const commit = this.commits.get(ensembleId)
      // idempotent: nothing (left) to revert is a success
      if (commit === undefined) return { ensembleId, allocations: [], reservations: [] }
      if (commit.owner !== owner) throw notOwner(ensembleId)
      return await this.undo(commit)
    })
  }

  private async undo (commit: CommitRecord): Promise<RevertReply> {
    const out: RevertReply = { ensembleId: commit.ensembleId, allocations: [], reservations: [] }
    for (const a of commit.allocations) {
      const record = this.c.runtime.get(a.id)
      if (record !== undefined) {
        if (!isTerminal(record.status)) await this.c.runtime.stopAllocation(a.id, { reason: `ensemble ${commit.ensembleId} reverted` })
        await this.endReport(a.id)
        await this.c.runtime.removeAllocation(a.id)
        await this.actors.get(a.id)?.stop('refuse')
        this.actors.delete(a.id)
        await this.c.actorKeys.remove(keyName(a.id))
        out.allocations.push(a.id)
      } else {
        out.reservations.push(a.id)
      }
      // idempotent: also what onEnded released already
      await this.releaseReservation(a.id)
    }
    await this.sub.del(commit.ensembleId)
    this.commits.delete(commit.ensembleId)
    return out
  }

  /** Commits never allocated release their ports (the ledger's reservation expires by itself). */
  private async sweep (): Promise<void> {
    const now = this.clock()
    for (const commit of [...this.commits.values()]) {
      if (commit.allocated || commit.expiresAt > now) continue
      await this.locked(commit.ensembleId, async () => {
        const current = this.commits.get(commit.ensembleId)
        if (current === undefined || current.allocated || current.expiresAt > this.clock()) return
        await this.undo(current)
        this.log.info({ ensembleId: current.ensembleId }, 'a commit expired unallocated: released')
      }).catch((err: unknown) => { this.log.warn({ err, ensembleId: commit.ensembleId }, 'could not release an expired commit; trying again') })
    }
  }

  /**
   * Frees what an allocation id holds in the ledger and the port table, in one level batch (a
   * `kill -9` leaves both or neither); idempotent.
   */
  async releaseReservation (id: string): Promise<void> {
    await this.c.resources.releaseWithPorts(id, this.c.ports)
  }

  remoteCommits (): Array<{ ensembleId: string, owner: string, orchestrator?: Handle }> {
    return [...this.commits.values()]
      .filter(c => c.orchestrator !== undefined && c.orchestrator.addr.peer !== this.c.node.peerId)
      .map(c => ({ ensembleId: c.ensembleId, owner: c.owner, orchestrator: c.orchestrator as Handle }))
  }

  // ---- allocations ----

  list (filter: { id?: string, executor?: 'process' | 'docker' } = {}): AllocationView[] {
    return this.c.runtime.list()
      .filter(r => (filter.id === undefined || r.id === filter.id) && (filter.executor === undefined || r.executor === filter.executor))
      .sort((a, b) => a.createdAt - b.createdAt)
      .map(r => this.view(r))
  }

  async stopAllocation (id: string, opts: { graceMs?: number } = {}): Promise<AllocationView> {
    this.assertRunning()
    return this.view(await this.c.runtime.stopAllocation(id, { graceMs: opts.graceMs, reason: 'stopped on request' }))
  }

  async restartAllocation (id: string): Promise<AllocationView> {
    this.assertRunning()
    return this.view(await this.c.runtime.restartAllocation(id, 'restarted on request'))
  }

  async startContainer (owner: string, request: unknown): Promise<AllocationView> {
    const req = parse(ContainerStartRequest, request, 'request')
    const ensembleId = `${LOCAL_ENSEMBLE_PREFIX.container}${randomBytes(4).toString('hex')}`
    await this.commit(owner, { ensembleId, allocations: [{ name: 'main', resources: req.resources, ports: req.ports }] })
    const spec: Record<string, unknown> = { type: req.type, executor: 'docker', image: req.image }
    for (const k of ['command', 'entrypoint', 'env', 'workingDir', 'restart', 'healthcheck'] as const) if (req[k] !== undefined) spec[k] = req[k]
    try {
      const { allocations: [a] } = await this.allocate(owner, { ensembleId, allocations: [{ name: 'main', spec }] })
      return this.view(await this.c.runtime.run(a.id))
    } catch (err) {
      await this.revert(owner, ensembleId).catch(() => {})
      throw err
    }
  }

  control (id: string): AllocationControl {
    const rt = this.c.runtime
    const current = (): AllocationRecord => {
      const r = rt.get(id)
      if (r === undefined) throw new NotFound(`no allocation ${id}`, { id })
      return r
    }
    return {
      id,
      view: () => this.view(current()),
      start: async () => this.view(await rt.run(id)),
      stop: async ({ graceMs }) => this.view(await rt.stopAllocation(id, { graceMs, reason: 'stopped by its controller' })),
      restart: async () => this.view(await rt.restartAllocation(id, 'restarted by its controller')),
      // Ended means ended for good: terminal, and its resources and ports given back.
      waitForEnd: async (signal) => {
        const over = (r: AllocationRecord): boolean => isTerminal(r.status) && r.released
        if (over(current())) return this.view(current())
        await new Promise<void>((resolve) => {
          const done = (): void => { off(); signal.removeEventListener('abort', done); resolve() }
          const off = rt.onChange(r => { if (r.id === id && over(r)) done() })
          signal.addEventListener('abort', done, { once: true })
          if (signal.aborted) done()
        })
        return this.view(current())
      },
      logs: async ({ stream, offset, maxBytes, wait, signal }) => {
        let chunk = await rt.readLogs(id, { stream, offset, maxBytes })
        if (wait && chunk.data === '' && chunk.eof && !isTerminal(current().status)) {
          const why = await rt.waitForLogs(id, { stream, offset: chunk.nextOffset, signal })
          if (why === 'data') chunk = await rt.readLogs(id, { stream, offset: chunk.nextOffset, maxBytes })
        }
        return { ...chunk, ended: isTerminal(current().status) && chunk.eof }
      }
    }
  }

  private view (r: AllocationRecord): AllocationView {
    const commit = this.commitOf(r.id)
    const dot = r.id.lastIndexOf('.')
    const entry = commit?.allocations.find(a => a.id === r.id)
    const actor = this.actors.get(r.id)
    const v: AllocationView = {
      id: r.id,
      ensembleId: commit?.ensembleId ?? r.id.slice(0, Math.max(0, dot)),
      name: entry?.name ?? r.id.slice(dot + 1),
      owner: commit?.owner ?? this.c.node.did,
      type: r.type,
      executor: r.executor,
      status: r.status,
      reason: r.reason,
      resources: { cpuCores: entry?.resources.cpuCores ?? r.spec.resources.cpuCores, ramBytes: entry?.resources.ramBytes ?? r.spec.resources.ramBytes, diskBytes: entry?.resources.diskBytes ?? 0 },
      ports: r.spec.ports.map(p => ({ private: p.container, public: p.host, protocol: p.protocol })),
      createdAt: iso(r.createdAt) as string,
      restarts: r.restarts,
      transitions: r.transitions.map(t => ({ at: iso(t.at) as string, status: t.status, reason: t.reason })),
      transitionCount: r.transitionCount
    }
    if (actor !== undefined) v.handle = actor.handle
    if (r.limits !== undefined) v.limits = r.limits
    if (r.ref !== undefined) v.workload = r.ref.id
    if (r.spec.image !== undefined) v.image = r.spec.image
    if (r.spec.command !== undefined) v.command = r.spec.command
    if (r.startedAt !== undefined) v.startedAt = iso(r.startedAt)
    if (r.endedAt !== undefined) v.endedAt = iso(r.endedAt)
    if (r.exitCode !== undefined) v.exitCode = r.exitCode
    if (r.signal !== undefined) v.signal = r.signal
    if (r.health !== undefined) v.health = { status: r.health.status, failures: r.health.failures, checkedAt: iso(r.health.checkedAt), detail: r.health.detail }
    return v
  }

  /** The allocation actor of `id`: its key (kept sealed), its owner as controller, a delegation of /dms/allocation. */
  private async spawn (id: string, owner: string): Promise<Actor> {
    const existing = this.actors.get(id)
    if (existing !== undefined) return existing
    const identity = await this.c.actorKeys.loadOrCreate(keyName(id))
    const exp = Math.floor((this.clock() + ALLOCATION_DELEGATION_MS) / 1000)
    const token = await issueToken(this.c.node, { audience: identity.did, caps: [ALLOCATION_CAPABILITY], exp })
    const commit = this.commitOf(id)
    const status = await this.statusDelegation(commit, identity.did)
    const proofs: ProofSource = {
      proofsFor: async (capability) => covers([ALLOCATION_CAPABILITY], capability) ? [token] : status !== undefined && covers(STATUS_CHANNEL_CAPS, capability) ? [status] : []
    }
    const actor = this.c.spawn({
      inbox: ALLOCATION_INBOX_PREFIX + id,
      identity,
      kind: 'allocation',
      controller: owner as Did,
      behaviors: this.c.allocationBehaviors,
      services: { allocation: this.control(id), streams: this.c.streams() },
      proofs,
      // one message at a time: a start, a stop and a restart never interleave
      mailbox: { concurrency: 1, capacity: 64 }
    })
    this.actors.set(id, actor)
    if (status !== undefined && commit?.orchestrator !== undefined) await this.report(id, actor, commit.orchestrator.addr.peer, commit.ensembleId)
    return actor
  }

  /**
   * The allocation actor's delegation of the orchestrator's grant of the status channel (this
   * node → the actor, same capabilities, on the orchestrator's node only, within the grant's
   * lifetime); undefined when there is none to delegate or no channels here.
   */
  private async statusDelegation (commit: CommitRecord | undefined, audience: string): Promise<string | undefined> {
    if (commit?.statusGrant === undefined || commit.orchestrator === undefined || this.c.channels === undefined) return undefined
    try {
      const parent = decodeToken(commit.statusGrant)
      return await issueToken(this.c.node, { audience, caps: STATUS_CHANNEL_CAPS, node: parent.payload.iss, depth: 0, exp: parent.payload.exp, proof: commit.statusGrant })
    } catch (err) {
      this.log.warn({ err, ensembleId: commit.ensembleId }, 'the orchestrator\'s status grant does not decode: no status is pushed (it polls)')
      return undefined
    }
  }

  /**
   * Pushes every status transition of allocation `id` to the orchestrator's node, in order, on
   * STATUS_CHANNEL from its actor; after a restart, first those made while it was down (the
   * runtime's recovery), from the last one put in the outbox (STATUS_REPORTED_SUBLEVEL). A crash
   * between the outbox and that record sends one again: the orchestrator applies each number once.
   */
  private async report (id: string, actor: Actor, peer: string, ensembleId: string): Promise<void> {
    const channels = (this.c.channels as () => ChannelService)()
    const channel = channels.open(peer, STATUS_CHANNEL, {
      from: actor,
      onRefused: (err, seq) => { this.log.warn({ err, allocation: id, seq }, seq === undefined ? 'the orchestrator\'s node refused the status channel: the orchestrator polls instead' : 'the orchestrator refused a status report') }
    })
    let queued = Number(await this.reported.get(id).catch(() => 0) ?? 0)
    const push = (r: AllocationRecord): void => {
      if (r.id !== id || r.transitionCount <= queued) return
      const first = r.transitionCount - r.transitions.length + 1
      for (let n = Math.max(queued + 1, first); n <= r.transitionCount; n++) {
        const t = r.transitions[n - first]
        const msg: StatusReport = { ensembleId, name: id.slice(id.lastIndexOf('.') + 1), id, n, status: t.status, reason: t.reason.slice(0, 4_096), at: t.at }
        if (n === r.transitionCount && r.health !== undefined) msg.health = r.health.status
        channel.send(msg).then(async () => { await this.reported.put(id, n) }).catch((err: unknown) => {
          this.log.debug({ err, allocation: id, n }, 'a status transition was not put in the channel (closed, or refused)')
        })
      }
      queued = r.transitionCount
    }
    const off = this.c.runtime.onChange(push)
    this.reporters.set(id, { channel, actor, to: peer, off })
    const now = this.c.runtime.get(id)
    if (now !== undefined) push(now)
  }

  /** The allocation is going: its status channel and its outbox go with it (nothing more to tell). */
  private async endReport (id: string): Promise<void> {
    const r = this.reporters.get(id)
    if (r === undefined) return
    this.reporters.delete(id)
    r.off()
    await this.c.channels?.().discard(r.to, STATUS_CHANNEL, { from: r.actor }).catch((err: unknown) => { this.log.warn({ err, allocation: id }, 'could not discard a status channel') })
    await this.reported.del(id)
  }

  private commitOf (allocationId: string): CommitRecord | undefined {
    for (const c of this.commits.values()) if (c.allocations.some(a => a.id === allocationId)) return c
    return undefined
  }

  /** Runs operations on one ensemble one at a time (the lock is forgotten once no one uses it). */
  private async locked<T> (ensembleId: string, task: () => Promise<T>): Promise<T> {
    let lock = this.locks.get(ensembleId)
    if (lock === undefined) { lock = { serial: createSerial(), users: 0 }; this.locks.set(ensembleId, lock) }
    lock.users++
    try {
      return await lock.serial(task)
    } finally {
      if (--lock.users === 0) this.locks.delete(ensembleId)
    }
  }

  private assertRunning (): void {
    if (!this.running) throw new NotRunning('the node\'s allocations are not running')
  }
}

function keyName (allocationId: string): string { return `alloc:${allocationId}` }

function notOwner (ensembleId: string): Unauthorized {
  return new Unauthorized(`ensemble ${ensembleId} was committed here by someone else: only its owner may allocate or revert it`, { reason: 'not-owner', ensembleId })
}

function parse<T extends z.ZodType> (schema: T, input: unknown, root: string): z.output<T> {
  const r = schema.safeParse(input)
  if (r.success) return r.data
  throw badRequestFrom(r.error, root)
}

/** A spec refusal for one allocation names where it is in the request. */
function prefixField (err: unknown, prefix: string): unknown {
  if (!(err instanceof DmsError) || typeof err.fields.field !== 'string') return err
  const Same = err.constructor as new (message: string, fields: DmsError['fields']) => DmsError
  return new Same(`${prefix}: ${err.message}`, { ...err.fields, field: `${prefix}.${err.fields.field}` })
}
