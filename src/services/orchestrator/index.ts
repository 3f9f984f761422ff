import { createHash, randomUUID } from 'node:crypto'
import type { Actor } from '../../actor/actor.js'
import type { AnyBehavior } from '../../actor/behavior.js'
import type { ActorInit } from '../../actor/system.js'
import type { Handle } from '../../actor/types.js'
import type { ActorKeys } from '../../identity/actor-keys.js'
import type { Did } from '../../identity/did.js'
import type { Identity } from '../../identity/identity.js'
import { InvalidState, NotFound, NotRunning, isDmsError } from '../../lib/errors.js'
import type { Logger } from '../../lib/log.js'
import type { ProofSource } from '../../security/authorizer.js'
import type { Db } from '../../store/db.js'
import type { ChannelService, ReceiveContext } from '../../channel/index.js'
import { issueToken } from '../../security/ucan.js'
import { STATUS_CHANNEL, STATUS_CHANNEL_CAPS, StatusReport } from '../provider/index.js'
import { jsonSublevel, parsedRecords, type JsonSublevel } from '../store.js'
import { evaluateBidRequest, type BidderComponents } from './bidder.js'
import {
  DEFAULT_BID_WINDOW_MS, DEFAULT_DEPLOY_TIMEOUT_MS, DEPLOYMENTS_SUBLEVEL, DEPLOYMENT_TOPIC, LATE_REPORT_FORGET_MS, MAX_DEPLOYMENT_TRANSITIONS,
  ORCHESTRATOR_DELEGATION_MS, ORCHESTRATOR_INBOX_PREFIX, STATUS_GRANT_MS, TASK_OUTPUT_KEEP_MS, WANTED_ASK_BOUND_MS, WANTED_CHECK_MS
} from './constants.js'
import type { Ensemble } from './ensemble-types.js'
import { parseEnsemble } from './ensemble.js'
import { Orchestration } from './orchestration.js'
import { DeploymentRecord, isFinal, type Bid, type BidRequest, type DeploymentView, type DirectReply } from './schemas.js'

export * from './schemas.js'
export { DEPLOYMENT_TOPIC } from './constants.js'
export type { Ensemble, EnsemblePlan } from './ensemble-types.js'

/** What an orchestrator actor's behaviours act on: its own deployment. */
export interface OrchestratorControl {
  readonly ensembleId: string
  acceptBids: (ensembleId: string, bids: Bid[]) => number
  wanted: (peer: string) => boolean
}

export interface NewDeployment {
  /** The ensemble file's text (YAML). */
  ensemble: string
  /** Values of the `${VAR}`s the file uses (the CLI sends those of its environment). */
  env?: Record<string, string>
  timeoutMs?: number
  bidWindowMs?: number
  /** Allow two ensemble nodes on one provider. */
  colocate?: boolean
  /** Images run instead of those the file names (`hello-world` → a locally built image). */
  images?: Record<string, string>
}

/** The orchestrator side of deployments on a node, and its provider side of bidding. */
export interface DeploymentService {
  start: () => Promise<void>
  stop: () => Promise<void>
  create: (owner: string, req: NewDeployment) => Promise<{ ensembleId: string, orchestrator: Handle }>
  list: () => DeploymentView[]
  /** The deployment; with `after`, waits (until `signal`) for a transition numbered past it. */
  status: (id: string, opts?: { after?: number, signal?: AbortSignal }) => Promise<DeploymentView>
  manifest: (id: string) => Manifest
  shutdown: (id: string) => Promise<DeploymentView>
  /** A chunk of an allocation's output, read through the orchestrator (which controls the allocation). */
  logs: (id: string, allocation: string, req: { stream: 'stdout' | 'stderr', offset: number, maxBytes: number, wait: boolean, timeoutMs: number }) => Promise<unknown>
  /** Who may read an allocation's output (its orchestrator actor) and where it lives: a log stream is opened from the one to the other. */
  logsTarget: (id: string, allocation: string) => { actor: Actor, handle: Handle }
  /** Provider side: a bid request heard on /nunet/deployment. */
  onBidRequest: (req: BidRequest) => Promise<void>
  /** Provider side: a bid request asked of this node directly (bids and reasons). */
  answer: (req: BidRequest) => Promise<DirectReply>
}

export interface Manifest {
  ensembleId: string
  status: string
  orchestrator?: Handle
  nodes: Record<string, { peer: string, did: string, allocations: string[] }>
  allocations: Record<string, { node: string, peer?: string, id?: string, handle?: Handle, status: string, ports: Array<{ private: number, public: number, protocol: 'tcp' | 'udp' }> }>
}

export interface DeploymentComponents extends BidderComponents {
  db: Db
  log: Logger
  clock?: () => number
  spawn: (init: ActorInit) => Actor
  actorKeys: ActorKeys
  /** The node's root actor, once the actor system exists: publishes bid requests, sends bids. */
  root: () => Actor
  /** Proofs for an orchestrator actor acting for the node on providers. */
  delegatedProofs: (issuer: Identity, subject: string, lifetimeMs: number) => ProofSource
  /** Connected peers (candidates to ask why they did not bid). */
  connectedPeers: () => Promise<string[]>
  /** Remote commits held here as a provider, to ask their orchestrators about after a restart. */
  remoteCommits: () => Array<{ ensembleId: string, owner: string, orchestrator?: Handle }>
  /** Releases a commit held here (as its owner would revert it). */
  releaseCommit: (ensembleId: string, owner: string) => Promise<void>
  orchestratorBehaviors: readonly AnyBehavior[]
  /** How often remote commits are checked (`wanted`) while the node runs (default WANTED_CHECK_MS). */
  wantedCheckMs?: number
  /** The node's channels: allocations push their status to this node on one (absent: the orchestrator only polls). */
  channels?: () => ChannelService
  /** Called after every persisted change of a deployment (events); must not throw. */
  onChange?: (record: { ensembleId: string, status: string, reason: string, transitionCount: number }) => void
}

export function createDeploymentService (c: DeploymentComponents): DeploymentService {
  return new Deployments(c)
}

const iso = (ms: number): string => new Date(ms).toISOString()

class Deployments implements DeploymentService {
  private readonly sub: JsonSublevel
  private readonly live = new Map<string, { orchestration: Orchestration, actor: Actor, ensemble: Ensemble }>()
  private readonly records = new Map<string, DeploymentRecord>()
  private readonly waiters = new Set<() => void>()
  private readonly clock: () => number
  private running = false
  private readonly background = new AbortController()
  private timer: NodeJS.Timeout | undefined
  /** Ensembles whose orchestrator is being asked `wanted` now (one question at a time each). */
  private readonly asking = new Set<string>()
  /** The status channel's handler is registered (once per node: a service restarted in-process keeps it). */
  private receiving = false

  constructor (private readonly c: DeploymentComponents) {
    this.sub = jsonSublevel(c.db, DEPLOYMENTS_SUBLEVEL)
    this.clock = c.clock ?? Date.now
  }

  async start (): Promise<void> {
    for await (const r of parsedRecords(this.sub, DeploymentRecord, this.c.log, 'deployment')) this.records.set(r.ensembleId, r)
    this.running = true
    for (const r of this.records.values()) {
      if (isFinal(r.status)) continue
      await this.resume(r).catch((err: unknown) => { this.c.log.error({ err, ensembleId: r.ensembleId }, 'could not resume a deployment') })
    }
    // after the orchestrations are back: until then a report is answered NotFound and sent again
    if (this.c.channels !== undefined && !this.receiving) {
      this.receiving = true
      this.c.channels().receive(STATUS_CHANNEL, async (msg, ctx) => { await this.onStatus(msg as StatusReport, ctx) }, { schema: StatusReport })
    }
    // As a provider: commits of ensembles deployed from elsewhere may no longer be wanted. After
    // a restart each is asked until answered (bounded); then every one, now and then, once: a
    // revert lost on the way (a provider that was unreachable for a moment) leaks nothing for long.
    for (const commit of this.c.remoteCommits()) void this.askWanted(commit, 'restart')
    this.timer = setInterval(() => {
      for (const commit of this.c.remoteCommits()) void this.askWanted(commit, 'periodic')
    }, this.c.wantedCheckMs ?? WANTED_CHECK_MS)
    this.timer.unref()
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    clearInterval(this.timer)
    this.background.abort()
    await Promise.all([...this.live.values()].map(async l => { await l.orchestration.stop(); await l.actor.stop('refuse') }))
    this.live.clear()
    for (const w of this.waiters) w()
  }

  async create (owner: string, req: NewDeployment): Promise<{ ensembleId: string, orchestrator: Handle }> {
    this.assertRunning()
    const ensemble = withImages(parseEnsemble(req.ensemble, { env: req.env ?? {}, source: 'ensemble' }), req.images ?? {})
    const now = this.clock()
    // DMS's form: the orchestrator's node and a uuid, hashed (64 hex: a valid ensemble id anywhere)
    const ensembleId = createHash('sha256').update(`${this.c.identity.peerId}${randomUUID()}`).digest('hex')
    const record: DeploymentRecord = {
      ensembleId,
      owner,
      ensemble: ensemble as unknown as Record<string, unknown>,
      status: 'Preparing',
      reason: 'created',
      createdAt: now,
      deadline: now + (req.timeoutMs ?? DEFAULT_DEPLOY_TIMEOUT_MS),
      colocate: req.colocate ?? false,
      bidWindowMs: req.bidWindowMs ?? DEFAULT_BID_WINDOW_MS,
      transitions: [{ at: now, status: 'Preparing', reason: 'created' }],
      transitionCount: 1,
      placement: {},
      allocations: {},
      excluded: [],
      restartTimes: []
    }
    this.records.set(ensembleId, record)
    await this.save(record)
    const l = await this.resume(record)
    return { ensembleId, orchestrator: l.actor.handle }
  }

  private async resume (record: DeploymentRecord): Promise<{ orchestration: Orchestration, actor: Actor }> {
    const ensemble = record.ensemble as unknown as Ensemble
    const identity = await this.c.actorKeys.loadOrCreate(keyName(record.ensembleId))
    let orchestration: Orchestration | undefined
    const control: OrchestratorControl = {
      ensembleId: record.ensembleId,
      acceptBids: (id, bids) => (orchestration as Orchestration).acceptBids(id, bids),
      wanted: (peer) => (orchestration as Orchestration).wanted(peer)
    }
    const actor = this.c.spawn({
      inbox: ORCHESTRATOR_INBOX_PREFIX + record.ensembleId,
      identity,
      kind: 'orchestrator',
      controller: record.owner as Did,
      behaviors: this.c.orchestratorBehaviors,
      services: { orchestrator: control },
      proofs: this.c.delegatedProofs(this.c.identity, identity.did, ORCHESTRATOR_DELEGATION_MS),
      mailbox: { concurrency: 16, capacity: 1024 }
    })
    orchestration = new Orchestration({
      actor,
      ensemble,
      record,
      save: async () => { await this.save(record) },
      publish: async (req) => { await this.c.root().publish(DEPLOYMENT_TOPIC, '/dms/deployment/request', req, { timeout: 10_000 }) },
      askSelf: async (req) => await this.answer(req),
      candidates: async () => await this.c.connectedPeers(),
      selfPeer: this.c.identity.peerId,
      log: this.c.log,
      clock: this.clock,
      ended: () => { void this.retire(record.ensembleId) },
      ...(this.c.channels !== undefined
        ? {
            statusGrant: async (did: string) => await issueToken(this.c.identity, {
              audience: did, caps: STATUS_CHANNEL_CAPS, node: this.c.identity.did, depth: 1, exp: Math.floor((this.clock() + STATUS_GRANT_MS) / 1000)
            }),
            forgetStatus: (did: string) => { this.forgetStatus(did) }
          }
        : {})
    })
    this.live.set(record.ensembleId, { orchestration, actor, ensemble })
    orchestration.start()
    return { orchestration, actor }
  }

  list (): DeploymentView[] {
    return [...this.records.values()].sort((a, b) => a.createdAt - b.createdAt).map(r => this.view(r, false))
  }

  async status (id: string, opts: { after?: number, signal?: AbortSignal } = {}): Promise<DeploymentView> {
    const r = this.get(id)
    const after = opts.after
    if (after !== undefined && opts.signal !== undefined) {
      const signal = opts.signal
      await new Promise<void>(resolve => {
        const check = (): void => {
          const cur = this.records.get(id)
          if (cur === undefined || cur.transitionCount > after || isFinal(cur.status) || signal.aborted || !this.running) { this.waiters.delete(check); signal.removeEventListener('abort', check); resolve() }
        }
        this.waiters.add(check)
        signal.addEventListener('abort', check, { once: true })
        check()
      })
    }
    return this.view(this.records.get(id) ?? r)
  }

  manifest (id: string): Manifest {
    const r = this.get(id)
    const e = r.ensemble as unknown as Ensemble
    const m: Manifest = { ensembleId: id, status: r.status, nodes: {}, allocations: {} }
    const actor = this.live.get(id)?.actor
    if (actor !== undefined) m.orchestrator = actor.handle
    for (const [n, p] of Object.entries(r.placement)) m.nodes[n] = { ...p, allocations: e.nodes[n]?.allocations ?? [] }
    for (const [a, p] of Object.entries(r.allocations)) {
      const entry: Manifest['allocations'][string] = { node: p.node, status: p.status, ports: p.ports }
      if (p.peer !== undefined) entry.peer = p.peer
      if (p.id !== undefined) entry.id = p.id
      if (p.handle !== undefined) entry.handle = p.handle as Handle
      m.allocations[a] = entry
    }
    return m
  }

  async shutdown (id: string): Promise<DeploymentView> {
    const r = this.get(id)
    const l = this.live.get(id)
    if (l !== undefined) await l.orchestration.shutdown()
    else if (!isFinal(r.status)) throw new InvalidState(`deployment ${id} is ${r.status} but has no orchestrator running here`)
    // idempotent: an ended deployment is answered as it is
    return this.view(r)
  }

  async logs (id: string, allocation: string, req: { stream: 'stdout' | 'stderr', offset: number, maxBytes: number, wait: boolean, timeoutMs: number }): Promise<unknown> {
    const { actor, handle } = this.logsTarget(id, allocation)
    return await actor.invoke(handle, '/dms/allocation/logs', { stream: req.stream, offset: req.offset, maxBytes: req.maxBytes, wait: req.wait }, { timeout: req.timeoutMs })
  }

  logsTarget (id: string, allocation: string): { actor: Actor, handle: Handle } {
    const r = this.get(id)
    const a = r.allocations[allocation]
    if (a === undefined) throw new NotFound(`deployment ${id} has no allocation ${allocation} (it has ${Object.keys(r.allocations).join(', ') || 'none placed yet'})`, { allocation })
    const l = this.live.get(id)
    if (l === undefined && isFinal(r.status)) throw new InvalidState(`deployment ${id} is ${r.status} and its allocations were released: their output is gone (it is kept ${TASK_OUTPUT_KEEP_MS / 60_000} min after the tasks of a deployment complete)`, { ensembleId: id })
    if (a.handle === undefined || l === undefined) throw new InvalidState(`allocation ${allocation} of ${id} is ${a.status}: it has no workload to read`)
    return { actor: l.actor, handle: a.handle as Handle }
  }

  /**
   * A status report on STATUS_CHANNEL: to the orchestration it is about. A report of a deployment
   * that ended is acknowledged and dropped (nothing is driven by it any more); one of a deployment
   * this node never had is refused (`NotFound`), as one from a provider it is not placed on
   * (`Unauthorized`, by the orchestration).
   */
  private async onStatus (msg: StatusReport, ctx: ReceiveContext): Promise<void> {
    const r = this.records.get(msg.ensembleId)
    if (r === undefined) throw new NotFound(`no deployment ${msg.ensembleId} on this node`, { ensembleId: msg.ensembleId })
    const l = this.live.get(msg.ensembleId)
    if (l === undefined) {
      this.c.log.debug({ ensembleId: msg.ensembleId, allocation: msg.name, n: msg.n }, 'a status report of a deployment no longer orchestrated here: dropped')
      // its receiver was forgotten as the deployment ended, and this report made it again
      setTimeout(() => { this.forgetStatus(ctx.from.id) }, LATE_REPORT_FORGET_MS).unref()
      return
    }
    await l.orchestration.onStatus(ctx.from, msg)
  }

  /** The status channel from allocation actor `did` is over: its receiver and checkpoint go. */
  private forgetStatus (did: string): void {
    this.c.channels?.().forget(did, STATUS_CHANNEL).catch((err: unknown) => { this.c.log.debug({ err, did }, 'could not forget a status channel') })
  }

  // ---- provider side ----

  async onBidRequest (req: BidRequest): Promise<void> {
    if (!this.running) return
    const reply = await evaluateBidRequest(this.c, req)
    if (reply.bids.length === 0) return
    await this.c.root().invoke(req.orchestrator, '/dms/deployment/bid', { ensembleId: req.ensembleId, bids: reply.bids }, { timeout: 10_000 })
  }

  async answer (req: BidRequest): Promise<DirectReply> {
    this.assertRunning()
    return await evaluateBidRequest(this.c, req)
  }

  /**
   * Asks the orchestrator of a remote ensemble held here whether it still wants it, and releases
   * it if not. After a restart (`restart`): asked with backoff 1 s → 30 s for WANTED_ASK_BOUND_MS,
   * and released also when no answer came (the orchestrator may be gone for good). Now and then
   * (`periodic`): asked once, released only on a definite no (its node may just be restarting).
   */
  private async askWanted (commit: { ensembleId: string, owner: string, orchestrator?: Handle }, mode: 'restart' | 'periodic'): Promise<void> {
    if (commit.orchestrator === undefined || this.asking.has(commit.ensembleId)) return
    this.asking.add(commit.ensembleId)
    try {
      const signal = this.background.signal
      const until = this.clock() + (mode === 'restart' ? WANTED_ASK_BOUND_MS : 0)
      let wait = 1_000
      let wanted: boolean | undefined
      for (let i = 0; !signal.aborted && i < 100; i++) {
        try {
          const r = await this.c.root().invoke<{ wanted: boolean }>(commit.orchestrator, '/dms/deployment/wanted', { ensembleId: commit.ensembleId }, { timeout: 5_000 })
          wanted = r.wanted
          break
        } catch (err) {
          // no such orchestrator (its deployment ended and was forgotten): not wanted
          if (isDmsError(err, 'UnknownBehavior') || isDmsError(err, 'NotFound')) { wanted = false; break }
          if (this.clock() + wait > until) break
          await new Promise(resolve => setTimeout(resolve, wait).unref())
          wait = Math.min(30_000, wait * 2)
        }
      }
      if (signal.aborted || wanted === true || (wanted === undefined && mode === 'periodic')) return
      this.c.log.info({ ensembleId: commit.ensembleId, answered: wanted !== undefined }, 'a remote ensemble is no longer wanted here: released')
      await this.c.releaseCommit(commit.ensembleId, commit.owner).catch((err: unknown) => { this.c.log.warn({ err, ensembleId: commit.ensembleId }, 'could not release an unwanted commit') })
    } finally {
      this.asking.delete(commit.ensembleId)
    }
  }

  // ---- plumbing ----

  private get (id: string): DeploymentRecord {
    const r = this.records.get(id)
    if (r === undefined) throw new NotFound(`no deployment ${id} on this node`, { ensembleId: id })
    return r
  }

  private async save (r: DeploymentRecord): Promise<void> {
    if (r.transitions.length > MAX_DEPLOYMENT_TRANSITIONS) r.transitions.splice(0, r.transitions.length - MAX_DEPLOYMENT_TRANSITIONS)
    await this.sub.put(r.ensembleId, r)
    for (const w of [...this.waiters]) w()
    this.c.onChange?.(r)
  }

  /**
   * An ended deployment's orchestrator goes, with its key: a provider that asks about it later
   * hears `UnknownBehavior`, which means not wanted. (Not awaited by the orchestration that calls
   * it as it ends, since `stop` waits for that orchestration.)
   */
  private async retire (id: string): Promise<void> {
    const l = this.live.get(id)
    if (l === undefined) return
    this.live.delete(id)
    for (const a of Object.values(this.records.get(id)?.allocations ?? {})) if (a.handle !== undefined) this.forgetStatus(a.handle.id)
    try {
      await l.orchestration.stop()
      await l.actor.stop('refuse')
      await this.c.actorKeys.remove(keyName(id))
    } catch (err) {
      this.c.log.warn({ err, ensembleId: id }, 'could not retire an ended orchestrator')
    }
  }

  /** The deployment as shown; the list leaves out the pushed reports (up to MAX_REPORTS_KEPT per allocation: the status of one shows them). */
  private view (r: DeploymentRecord, reports = true): DeploymentView {
    const v: DeploymentView = {
      ensembleId: r.ensembleId,
      status: r.status,
      reason: r.reason,
      owner: r.owner,
      createdAt: iso(r.createdAt),
      deadline: iso(r.deadline),
      transitions: r.transitions.map(t => ({ at: iso(t.at), status: t.status, reason: t.reason })),
      transitionCount: r.transitionCount,
      allocations: Object.fromEntries(Object.entries(r.allocations).map(([a, p]) => [a, {
        node: p.node, peer: p.peer, id: p.id, status: p.status, restarts: p.restarts, ports: p.ports, ...(reports ? { reports: p.reports.map(x => ({ ...x, at: iso(x.at) })) } : {})
      }]))
    }
    const actor = this.live.get(r.ensembleId)?.actor
    if (actor !== undefined) v.orchestrator = actor.handle
    return v
  }

  private assertRunning (): void {
    if (!this.running) throw new NotRunning('deployments are not running on this node')
  }
}

function keyName (ensembleId: string): string { return `orch:${ensembleId}` }

/** The ensemble with its images replaced as `images` says, each replacement noted. */
export function withImages (e: Ensemble, images: Record<string, string>): Ensemble {
  const notes = [...(e.notes ?? [])]
  for (const a of Object.values(e.allocations)) {
    const image = a.execution.image
    if (image === undefined || images[image] === undefined) continue
    a.execution.image = images[image]
    notes.push(`allocations.${a.name}.execution.image: ${image} runs as ${images[image]}`)
  }
  return { ...e, notes }
}

