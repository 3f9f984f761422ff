import type { Actor } from '../../actor/actor.js'
import type { Handle } from '../../actor/types.js'
import { peerIdFromDid } from '../../identity/did.js'
import { InvalidState, Unauthorized, isDmsError } from '../../lib/errors.js'
import type { Logger } from '../../lib/log.js'
import type { AllocationView, StatusReport } from '../provider/index.js'
import { verifyBid } from './bidder.js'
import {
  COMMIT_TTL_MS, MAX_EXPLAIN_CANDIDATES, MAX_REPORTS_KEPT, MIN_CALL_MS, PROVIDER_CALL_MS, PROVIDER_LOST_MS, REVERT_CALL_MS, REVERT_TRIES, START_POLL_MS, SUPERVISE_INTERVAL_MS, TASK_OUTPUT_KEEP_MS
} from './constants.js'
import type { Ensemble, EnsembleAllocation, EnsembleNode } from './ensemble-types.js'
import { planEnsemble } from './ensemble.js'
import type { Bid, BidRequest, DeploymentRecord, DeploymentStatus, DirectReply, NodeAsk } from './schemas.js'
import { isFinal } from './schemas.js'

/** What one orchestration needs of its node; the node's deployment service provides it. */
export interface OrchestrationContext {
  /** The orchestrator actor: every call to a provider is made (and signed) as it. */
  actor: Actor
  ensemble: Ensemble
  record: DeploymentRecord
  /** Persists the record and tells whoever follows the deployment. */
  save: () => Promise<void>
  /** Publishes a bid request on /nunet/deployment. */
  publish: (req: BidRequest) => Promise<void>
  /** This node as a provider (it answers its own requests directly: gossip does not loop back). */
  askSelf: (req: BidRequest) => Promise<DirectReply>
  /** Peers to ask why they did not bid: the connected ones. */
  candidates: () => Promise<string[]>
  selfPeer: string
  log: Logger
  clock: () => number
  /** The orchestration is over (its record final, everything released or kept no longer). */
  ended: () => void
  /** A grant of the status channel for the provider node `did` (sent with the commit); absent: none is given, the orchestrator polls only. */
  statusGrant?: (did: string) => Promise<string>
  /** Forgets the status channel from allocation actor `did` (it was reverted or re-placed). */
  forgetStatus?: (did: string) => void
}

/** Why a deployment attempt stopped; `retry` goes back to bidding (with `exclude` left out). */
class AttemptFailed extends Error {
  constructor (message: string, readonly retry: boolean, readonly exclude?: string) { super(message) }
}

const short = (peer: string): string => peer.length > 16 ? `${peer.slice(0, 12)}…${peer.slice(-4)}` : peer
const errorText = (err: unknown): string => isDmsError(err) ? `${err.name}: ${err.message}` : err instanceof Error ? err.message : String(err)

/**
 * One deployment, from bids to supervision (specs/deployments.md, "The deployment"):
 * Preparing (bids, placement) → Committing → Provisioning (allocate, start in dependency order) →
 * Running (supervised) → Completed | Failed, with ShuttingDown on request. Every transition is
 * persisted before the next step, so a restarted node continues from it (`resume`).
 */
export class Orchestration {
  private readonly bidSinks = new Set<(bid: Bid) => void>()
  private readonly abort = new AbortController()
  private running: Promise<void> | undefined
  /** Last time each provider answered a status call (supervision). */
  private readonly lastSeen = new Map<string, number>()
  private shutdownAsked = false
  /** Completed by its tasks, its allocations kept (their output readable) until TASK_OUTPUT_KEEP_MS or a shutdown. */
  private keeping = false
  private finished = false
  /** Woken by a pushed status report: supervision and starts act on it at once rather than at their next poll. */
  private readonly wakers = new Set<() => void>()

  constructor (private readonly c: OrchestrationContext) {}

  get record (): DeploymentRecord { return this.c.record }
  get handle (): Handle { return this.c.actor.handle }

  /** A bid from a provider (through `/dms/deployment/bid`); unverifiable or unasked-for bids are refused. */
  acceptBids (ensembleId: string, bids: Bid[]): number {
    if (ensembleId !== this.record.ensembleId) throw new InvalidState(`this orchestrator deploys ${this.record.ensembleId}, not ${ensembleId}`)
    let taken = 0
    for (const bid of bids) {
      if (bid.ensembleId !== ensembleId || !verifyBid(bid)) continue
      for (const sink of this.bidSinks) sink(bid)
      taken++
    }
    return taken
  }

  /** Whether `peer` still runs part of this deployment (a restarted provider asks). */
  wanted (peer: string): boolean {
    const live = this.keeping || (!isFinal(this.record.status) && this.record.status !== 'ShuttingDown')
    return live && Object.values(this.record.placement).some(p => p.peer === peer)
  }

  /**
   * A status transition pushed by an allocation's actor on the status channel (specs/deployments.md,
   * "Status over a channel"). Only the provider the allocation is placed on may report on it;
   * each transition number is applied once (a report sent again after a crash changes nothing),
   * and one older than what a poll already showed is kept in the history without changing the status.
   */
  async onStatus (from: { id: string, addr: { peer: string } }, msg: StatusReport): Promise<void> {
    const a = this.record.allocations[msg.name]
    if (a === undefined || a.peer !== from.addr.peer) {
      throw new Unauthorized(`allocation ${msg.name} of ${this.record.ensembleId} is not placed on peer ${from.addr.peer}`, { reason: 'not-placed-here', allocation: msg.name })
    }
    // a report of an allocation that was reverted or re-placed since (same id, earlier actor): history
    if (a.id !== msg.id || (a.handle !== undefined && a.handle.id !== from.id)) {
      this.c.log.debug({ ensembleId: this.record.ensembleId, allocation: msg.name, from: from.id }, 'a status report of an earlier placement: ignored')
      return
    }
    const last = a.reports.length > 0 ? a.reports[a.reports.length - 1].n : 0
    if (msg.n <= last) return
    a.reports = [...a.reports, { n: msg.n, status: msg.status, reason: msg.reason, at: msg.at }].slice(-MAX_REPORTS_KEPT)
    if (msg.n > a.seen) Object.assign(a, { status: msg.status, reason: msg.reason, seen: msg.n })
    this.lastSeen.set(from.addr.peer, this.c.clock())
    await this.save()
    for (const w of [...this.wakers]) w()
  }

  /** Runs (or resumes) the deployment in the background. */
  start (): void {
    this.running ??= this.main().catch((err: unknown) => {
      this.c.log.error({ err, ensembleId: this.record.ensembleId }, 'orchestration failed unexpectedly')
    })
  }

  async shutdown (): Promise<void> {
    if (isFinal(this.record.status) && !this.keeping) return
    this.shutdownAsked = true
    this.abort.abort()
    await this.running
    if (!isFinal(this.record.status)) await this.shutDown('shut down on request')
    this.finish()
  }

  /** Stops working on it (the node stops); the record stays as it is, to be resumed. */
  async stop (): Promise<void> {
    this.abort.abort()
    await this.running
  }

  private get aborted (): boolean { return this.abort.signal.aborted }

  private async main (): Promise<void> {
    const r = this.record
    try {
      if (r.status === 'ShuttingDown') { await this.shutDown('shut down on request'); return }
      if (r.status === 'Running') { await this.supervise(); return }
      if (r.status === 'Provisioning' && this.allHandled()) {
        await this.startAll()
      } else {
        if (Object.keys(r.placement).length > 0) {
          // A restart found it half-way through committing: undo it and deploy again.
          await this.revertAll('resumed after a restart while committing')
        }
        await this.deploy()
      }
      if (this.aborted) return
      await this.supervise()
    } catch (err) {
      if (this.aborted) return
      await this.fail(errorText(err))
    } finally {
      if (isFinal(r.status)) this.finish()
    }
  }

  /** Tells the service, once, that this orchestration is over. */
  private finish (): void {
    if (this.finished) return
    this.finished = true
    this.c.ended()
  }

  // ---- deployment ----

  private async deploy (): Promise<void> {
    const nodes = Object.values(this.c.ensemble.nodes)
    for (let attempt = 1; !this.aborted; attempt++) {
      if (this.left() <= 0) throw new DeadlineError(`deadline passed before every node was placed (attempt ${attempt})`)
      await this.transition('Preparing', attempt === 1 ? 'collecting bids' : `collecting bids again (attempt ${attempt})`)
      const placement = await this.placeNodes(nodes)
      try {
        await this.transition('Committing', `committing on ${new Set(Object.values(placement).map(p => p.peer)).size} providers`)
        await this.commit(placement)
        await this.transition('Provisioning', 'allocating')
        await this.allocate(Object.keys(placement))
        await this.startAll()
        return
      } catch (err) {
        if (this.aborted) return
        await this.revertAll(`attempt ${attempt} failed`)
        if (err instanceof AttemptFailed && err.retry) {
          if (err.exclude !== undefined && !this.record.excluded.includes(err.exclude)) this.record.excluded.push(err.exclude)
          this.c.log.info({ ensembleId: this.record.ensembleId, attempt, reason: err.message }, 'deployment attempt failed; bidding again')
          await this.save()
          continue
        }
        throw err
      }
    }
  }

  /**
   * Bids for `nodes`, then one provider per node. When some node is left without one, the
   * connected peers are asked directly (gossip may not have reached them yet: a mesh forms within
   * a heartbeat of a connection), and their answers either complete the placement or say why not.
   */
  private async placeNodes (nodes: EnsembleNode[]): Promise<Record<string, { peer: string, did: string }>> {
    const bids = await this.collectBids(nodes)
    // a shutdown (or the node stopping) cut the collection short: place nothing
    if (this.aborted) throw new Aborted()
    let match = this.match(nodes, bids)
    let missing = nodes.filter(n => match[n.name] === undefined)
    if (missing.length > 0 && !this.aborted) {
      const answers = await this.askCandidates(missing)
      for (const a of answers) {
        for (const bid of a.reply?.bids ?? []) {
          const list = bids.get(bid.node)
          if (list !== undefined && verifyBid(bid) && !this.record.excluded.includes(bid.peer) && !list.some(b => b.peer === bid.peer)) list.push(bid)
        }
      }
      if (this.aborted) throw new Aborted()
      match = this.match(nodes, bids)
      missing = nodes.filter(n => match[n.name] === undefined)
      if (missing.length > 0) throw new NoFit(this.explain(missing, answers))
    }
    for (const n of nodes) {
      this.record.placement[n.name] = match[n.name]
      for (const a of n.allocations) {
        const before = this.record.allocations[a]?.handle
        if (before !== undefined) this.c.forgetStatus?.(before.id)
        this.record.allocations[a] = { name: a, node: n.name, peer: match[n.name].peer, status: 'placed', ports: [], restarts: this.record.allocations[a]?.restarts ?? 0, seen: 0, reports: [] }
      }
    }
    await this.save()
    return Object.fromEntries(nodes.map(n => [n.name, match[n.name]]))
  }

  private asks (nodes: EnsembleNode[]): NodeAsk[] {
    const plan = planEnsemble(this.c.ensemble)
    return nodes.map(n => {
      const p = plan.nodes.find(x => x.name === n.name)
      if (p === undefined) throw new InvalidState(`node ${n.name} is not in the plan`)
      const ask: NodeAsk = { name: n.name, resources: p.resources, executors: p.executors, ports: n.ports, labels: n.labels }
      if (n.location !== undefined) ask.location = n.location
      return ask
    })
  }

  private request (nodes: EnsembleNode[]): BidRequest {
    return { ensembleId: this.record.ensembleId, orchestrator: this.handle, nodes: this.asks(nodes) }
  }

  private async collectBids (nodes: EnsembleNode[]): Promise<Map<string, Bid[]>> {
    const wanted = new Set(nodes.map(n => n.name))
    const pinned = new Map(nodes.filter(n => n.peer !== undefined).map(n => [n.name, pinnedPeer(n.peer as string)]))
    const bids = new Map<string, Bid[]>(nodes.map(n => [n.name, []]))
    let done: () => void = () => {}
    const complete = new Promise<void>(resolve => { done = resolve })
    const add = (bid: Bid): void => {
      if (!wanted.has(bid.node) || this.record.excluded.includes(bid.peer)) return
      const pin = pinned.get(bid.node)
      if (pin !== undefined && pin !== bid.peer) return
      const list = bids.get(bid.node) as Bid[]
      if (list.some(b => b.peer === bid.peer)) return
      list.push(bid)
      if (nodes.every(n => this.match(nodes, bids)[n.name] !== undefined)) done()
    }
    this.bidSinks.add(add)
    try {
      // Answers arrive through `add` (gossip bids through acceptBids); none is awaited here: the
      // window or a complete placement ends the collection. A failed ask is explained later.
      const req = this.request(nodes)
      if (nodes.some(n => n.peer === undefined)) {
        this.c.publish(req).catch((err: unknown) => { this.c.log.debug({ err }, 'bid request not published (no peers yet?)') })
        this.c.askSelf(req).then(r => { r.bids.forEach(add) }, () => {})
      }
      for (const [node, peer] of pinned) {
        const one = { ...req, nodes: req.nodes.filter(n => n.name === node) }
        this.askDirect(peer, one).then(r => { r.bids.filter(b => verifyBid(b)).forEach(add) }, () => {})
      }
      const window = Math.max(0, Math.min(this.record.bidWindowMs, this.left()))
      let timer: NodeJS.Timeout | undefined
      await Promise.race([complete, new Promise<void>(resolve => { timer = setTimeout(resolve, window) }), aborted(this.abort.signal)])
      clearTimeout(timer)
    } finally {
      this.bidSinks.delete(add)
    }
    return bids
  }

  private async askDirect (peer: string, req: BidRequest): Promise<DirectReply> {
    if (peer === this.c.selfPeer) return await this.c.askSelf(req)
    return await this.c.actor.invoke<DirectReply>(peer, '/dms/deployment/request/direct', req, { timeout: Math.min(PROVIDER_CALL_MS, Math.max(1, this.left())) })
  }

  /**
   * One provider per node, each provider at most once unless colocation is allowed: a maximum
   * bipartite matching (augmenting paths), nodes with the fewest bids first.
   */
  private match (nodes: EnsembleNode[], bids: Map<string, Bid[]>): Record<string, { peer: string, did: string }> {
    const order = [...nodes].sort((a, b) => (bids.get(a.name)?.length ?? 0) - (bids.get(b.name)?.length ?? 0))
    const out: Record<string, { peer: string, did: string }> = {}
    if (this.record.colocate) {
      for (const n of order) { const b = bids.get(n.name)?.[0]; if (b !== undefined) out[n.name] = { peer: b.peer, did: b.did } }
      return out
    }
    // providers that run the ensemble's other nodes (a re-placement moves only some) are taken
    const taken = new Set(Object.entries(this.record.placement).filter(([n]) => !nodes.some(x => x.name === n)).map(([, p]) => p.peer))
    const owner = new Map<string, string>()
    const tryNode = (node: string, seen: Set<string>): boolean => {
      for (const b of bids.get(node) ?? []) {
        if (seen.has(b.peer) || taken.has(b.peer)) continue
        seen.add(b.peer)
        const holder = owner.get(b.peer)
        if (holder === undefined || tryNode(holder, seen)) {
          owner.set(b.peer, node)
          out[node] = { peer: b.peer, did: b.did }
          return true
        }
      }
      return false
    }
    for (const n of order) tryNode(n.name, new Set())
    // out may hold stale entries of nodes whose provider was taken over: rebuild from owner
    const fixed: Record<string, { peer: string, did: string }> = {}
    for (const [peer, node] of owner) fixed[node] = { peer, did: (bids.get(node)?.find(b => b.peer === peer) as Bid).did }
    return fixed
  }

  /** Asks this node and the connected peers directly about `missing` (pinned nodes: their pin only). */
  private async askCandidates (missing: EnsembleNode[]): Promise<Answer[]> {
    const pins = missing.filter(n => n.peer !== undefined).map(n => pinnedPeer(n.peer as string))
    const everyone = missing.some(n => n.peer === undefined) ? [this.c.selfPeer, ...(await this.c.candidates()).filter(p => p !== this.c.selfPeer)] : []
    const candidates = [...new Set([...pins, ...everyone])].slice(0, MAX_EXPLAIN_CANDIDATES)
    const req = this.request(missing)
    return await Promise.all(candidates.map(async (peer): Promise<Answer> => {
      try { return { peer, reply: await this.askDirect(peer, req) } } catch (err) { return { peer, error: errorText(err) } }
    }))
  }

  /** Why no provider runs `missing`: one part per node, a reason per provider asked. */
  private explain (missing: EnsembleNode[], answers: Answer[]): string {
    const lines = missing.map(n => {
      const pin = n.peer !== undefined ? pinnedPeer(n.peer) : undefined
      const why: string[] = []
      for (const a of answers) {
        if (pin !== undefined && a.peer !== pin) continue
        const who = a.peer === this.c.selfPeer ? `peer ${short(a.peer)} (this node)` : `peer ${short(a.peer)}`
        if (this.record.excluded.includes(a.peer)) { why.push(`${who}: excluded after it failed this deployment`); continue }
        if (a.error !== undefined) { why.push(`${who}: ${a.error}`); continue }
        const refusal = a.reply?.refusals.find(r => r.node === n.name)
        if (refusal !== undefined) why.push(`${who}: ${refusal.reason}`)
        else if (a.reply?.bids.some(b => b.node === n.name) === true) why.push(`${who}: would run it, but runs another node of this ensemble (colocation is off)`)
      }
      if (pin !== undefined && !answers.some(a => a.peer === pin)) why.push(`peer ${short(pin)} (pinned): not asked`)
      return `${n.name}: ${why.length > 0 ? why.join('; ') : 'no provider answered'}`
    })
    return `no provider for ${missing.map(n => n.name).join(', ')}: ${lines.join(' | ')}`
  }

  private byPeer (nodes: string[]): Map<string, string[]> {
    const out = new Map<string, string[]>()
    for (const n of nodes) {
      const peer = this.record.placement[n].peer
      out.set(peer, [...(out.get(peer) ?? []), n])
    }
    return out
  }

  private async commit (placement: Record<string, { peer: string }>): Promise<void> {
    const e = this.c.ensemble
    await Promise.all([...this.byPeer(Object.keys(placement))].map(async ([peer, nodes]) => {
      const allocations = nodes.flatMap(n => e.nodes[n].allocations.map(a => ({
        name: a,
        resources: e.allocations[a].resources,
        ports: e.nodes[n].ports.filter(p => p.allocation === a).map(p => p.public === undefined ? { private: p.private, protocol: p.protocol } : { private: p.private, public: p.public, protocol: p.protocol })
      })))
      try {
        const grant = await this.c.statusGrant?.(this.record.placement[nodes[0]].did)
        const reply = await this.call<{ allocations: Array<{ name: string, id: string, ports: PlacedPorts }> }>(peer, '/dms/deployment/commit', {
          ensembleId: this.record.ensembleId, ttlMs: COMMIT_TTL_MS, orchestrator: this.handle, allocations, ...(grant !== undefined ? { statusGrant: grant } : {})
        })
        for (const a of reply.allocations) Object.assign(this.record.allocations[a.name], { id: a.id, ports: a.ports, status: 'committed' })
      } catch (err) {
        throw new AttemptFailed(`commit on ${short(peer)} failed: ${errorText(err)}`, true, peer)
      }
    }))
    await this.save()
  }

  private async allocate (nodes: string[]): Promise<void> {
    const e = this.c.ensemble
    await Promise.all([...this.byPeer(nodes)].map(async ([peer, ns]) => {
      const allocations = ns.flatMap(n => e.nodes[n].allocations.map(a => ({ name: a, spec: specOf(e.allocations[a]) })))
      try {
        const reply = await this.call<{ allocations: Array<{ name: string, id: string, handle: Handle }> }>(peer, '/dms/deployment/allocate', { ensembleId: this.record.ensembleId, allocations })
        // its first transitions may have been pushed already (pending at allocate): never go back on them
        for (const a of reply.allocations) Object.assign(this.record.allocations[a.name], this.record.allocations[a.name].seen > 0 ? { handle: a.handle } : { handle: a.handle, status: 'pending' })
      } catch (err) {
        // A spec the provider refuses would be refused anywhere: no retry for a BadRequest.
        throw new AttemptFailed(`allocate on ${short(peer)} failed: ${errorText(err)}`, !isDmsError(err, 'BadRequest'), peer)
      }
    }))
    await this.save()
  }

  private allHandled (): boolean {
    return Object.keys(this.c.ensemble.allocations).every(a => this.record.allocations[a]?.handle !== undefined)
  }

  /** Starts every allocation, a dependency layer at a time; each waits for its dependencies to run (and be healthy). */
  private async startAll (only?: Set<string>): Promise<void> {
    const layers = planEnsemble(this.c.ensemble).layers
    for (const [i, layer] of layers.entries()) {
      const names = layer.filter(a => only === undefined || only.has(a))
      if (names.length === 0) continue
      await this.transition('Provisioning', `starting ${names.join(', ')} (layer ${i + 1} of ${layers.length})`)
      await Promise.all(names.map(async a => { await this.startOne(a) }))
    }
    if (only === undefined) await this.transition('Running', 'every allocation started')
  }

  private async startOne (name: string): Promise<void> {
    const placed = this.record.allocations[name]
    const handle = placed.handle as Handle
    let view = await this.call<AllocationView>(handle, '/dms/allocation/status', {})
    if (view.status === 'pending') view = await this.call<AllocationView>(handle, '/dms/allocation/start', {})
    const wantsHealth = this.c.ensemble.allocations[name].healthcheck !== undefined
    for (;;) {
      this.observe(name, view)
      if (view.status === 'completed') break
      if (view.status === 'running' && (!wantsHealth || view.health?.status === 'healthy')) break
      if (view.status === 'failed' || view.status === 'stopped') {
        throw new AttemptFailed(`allocation ${name} ${view.status} on ${short(placed.peer ?? '')}: ${view.reason}`, false)
      }
      const late = (): DeadlineError => new DeadlineError(`deadline passed while ${name} was ${view.status}${wantsHealth ? ` (health ${view.health?.status ?? 'unknown'})` : ''}`)
      if (this.left() <= 0) throw late()
      if (this.aborted) return
      // a pushed transition wakes it at once; the poll stays (health is polled, and pushes may be off)
      await this.nap(START_POLL_MS)
      if (this.left() <= 0) throw late()
      view = await this.call<AllocationView>(handle, '/dms/allocation/status', {})
    }
    await this.save()
  }

  // ---- supervision ----

  private async supervise (): Promise<void> {
    const now = this.c.clock()
    for (const p of Object.values(this.record.placement)) this.lastSeen.set(p.peer, now)
    let nextPoll = now + SUPERVISE_INTERVAL_MS
    while (!this.aborted && this.record.status === 'Running') {
      // pushed transitions wake it at once; the poll is the liveness signal and the fallback
      await this.nap(Math.max(0, nextPoll - this.c.clock()))
      if (this.aborted) return
      const views = new Map<string, Observed | undefined>()
      if (this.c.clock() >= nextPoll) {
        nextPoll = this.c.clock() + SUPERVISE_INTERVAL_MS
        const polled = await this.poll()
        if (this.aborted) return
        let changed = false
        for (const [name, v] of polled) {
          if (v === undefined) continue
          if ('gone' in v) { views.set(name, v); continue }
          changed = this.observe(name, v) || changed
        }
        if (changed) await this.save()
      }
      // what it is known to be (pushed or polled, whichever is newer), unless its provider lost it
      for (const a of Object.values(this.record.allocations)) {
        if (!views.has(a.name) && isAllocationStatus(a.status)) views.set(a.name, { status: a.status, reason: a.reason ?? '' })
      }
      // lost providers: everything they ran is placed elsewhere
      const lost = [...new Set(Object.values(this.record.placement).map(p => p.peer))].filter(p => this.c.clock() - (this.lastSeen.get(p) ?? 0) > PROVIDER_LOST_MS)
      if (lost.length > 0) {
        for (const peer of lost) if (!this.record.excluded.includes(peer)) this.record.excluded.push(peer)
        const nodes = Object.keys(this.record.placement).filter(n => lost.includes(this.record.placement[n].peer))
        await this.recover(nodes, `provider ${lost.map(short).join(', ')} stopped answering for ${PROVIDER_LOST_MS / 1000} s`, [], lost)
        continue
      }
      const failed = [...views].filter(([name, v]) => v !== undefined && (v.status === 'failed' || (v.status === 'stopped' && this.c.ensemble.allocations[name].type === 'service'))).map(([name]) => name)
      const down = failed.filter(a => recoveryOf(this.c.ensemble, a) !== 'stay_down')
      if (down.length > 0) {
        await this.applyStrategy(down, views)
        continue
      }
      const allTasksDone = Object.values(this.c.ensemble.allocations).every(a => {
        const s = views.get(a.name)?.status ?? this.record.allocations[a.name].status
        return a.type === 'task' ? s === 'completed' || s === 'failed' : s === 'failed' || s === 'stopped'
      })
      if (allTasksDone) {
        const failures = failed.length
        // Completed once every provider gave each ended allocation's resources and ports back
        // (status with `wait` answers then, a moment after the status itself turned); what stays
        // on the providers a while is their records and output, for `deployment logs`.
        await Promise.all(Object.values(this.record.allocations).map(async a => {
          if (a.handle !== undefined) await this.c.actor.invoke(a.handle as Handle, '/dms/allocation/status', { wait: true }, { timeout: PROVIDER_CALL_MS }).catch(() => {})
        }))
        this.keeping = true
        await this.transition('Completed', failures === 0 ? 'every task completed' : `ended; ${failures} allocation(s) stayed down (failure_recovery: stay_down)`)
        await delay(TASK_OUTPUT_KEEP_MS, this.abort.signal)
        this.keeping = false
        // the node stopping: the providers release it when they learn it is not wanted
        if (this.aborted && !this.shutdownAsked) return
        await this.releaseAll()
        return
      }
    }
  }

  /** Every allocation's status asked of its actor (the liveness of providers: `lastSeen`). */
  private async poll (): Promise<Map<string, AllocationView | Gone | undefined>> {
    const views = new Map<string, AllocationView | Gone | undefined>()
    await Promise.all(Object.values(this.record.allocations).map(async a => {
      try {
        const v = await this.c.actor.invoke<AllocationView>(a.handle as Handle, '/dms/allocation/status', {}, { timeout: Math.min(PROVIDER_CALL_MS, PROVIDER_LOST_MS) })
        views.set(a.name, v)
        this.lastSeen.set(a.peer as string, this.c.clock())
      } catch (err) {
        views.set(a.name, undefined)
        // a provider that answers with an error is alive; one that no longer knows the
        // allocation's actor lost it (reverted by itself, its record gone): it is down
        if (isDmsError(err) && !isDmsError(err, 'Timeout') && !isDmsError(err, 'Unreachable') && !isDmsError(err, 'NotRunning')) this.lastSeen.set(a.peer as string, this.c.clock())
        if (isDmsError(err, 'UnknownBehavior') || isDmsError(err, 'NotFound')) views.set(a.name, gone(errorText(err)))
      }
    }))
    return views
  }

  /** A polled view of allocation `name`, taken unless a newer transition was seen (pushed); whether the record changed. */
  private observe (name: string, v: AllocationView): boolean {
    const a = this.record.allocations[name]
    const n = v.transitionCount
    if (n !== undefined && n <= a.seen) return false
    const changed = a.status !== v.status
    Object.assign(a, { status: v.status, reason: v.reason, seen: n ?? a.seen })
    return changed
  }

  /** Waits `ms`, or less: until a status is pushed or the orchestration is stopped. */
  private async nap (ms: number): Promise<void> {
    if (this.aborted) return
    await new Promise<void>(resolve => {
      const done = (): void => { clearTimeout(t); this.wakers.delete(done); this.abort.signal.removeEventListener('abort', done); resolve() }
      const t = setTimeout(done, ms)
      this.wakers.add(done)
      this.abort.signal.addEventListener('abort', done, { once: true })
    })
  }

  /** The supervisor strategy for failed allocations `down`. */
  private async applyStrategy (down: string[], views: Map<string, Observed | undefined>): Promise<void> {
    const e = this.c.ensemble
    const strategy = strategyOf(e, down[0])
    let restart = new Set(down)
    if (strategy === 'AllForOne') restart = new Set(Object.keys(e.allocations))
    if (strategy === 'RestForOne') for (const a of down) for (const d of dependentsOf(e, a)) restart.add(d)
    const why = `${down.join(', ')} ${down.length === 1 ? 'is' : 'are'} down (${down.map(a => views.get(a)?.reason ?? '').filter(r => r !== '').join('; ') || 'failed'}); ${strategy}: restarting ${[...restart].join(', ')}`
    // a task that completed stays completed; what ended otherwise is placed again (a provider
    // keeps an ended allocation ended); what still runs is restarted where it is
    for (const a of restart) if (views.get(a)?.status === 'completed') restart.delete(a)
    const ended = [...restart].filter(a => { const s = views.get(a)?.status; return s === undefined || s === 'failed' || s === 'stopped' })
    const nodes = [...new Set(ended.map(a => this.record.allocations[a].node))]
    const live = [...restart].filter(a => !ended.includes(a))
    await this.recover(nodes, why, live, [])
  }

  /**
   * Places `nodes` again (revert where they ran, bid, commit, allocate, start) and restarts the
   * allocations `live` in place; counts against the supervisor's restart limit. `lost` providers
   * are not asked to revert: they do not answer, and ask whether they are wanted when they return.
   */
  private async recover (nodes: string[], why: string, live: string[], lost: string[]): Promise<void> {
    const sup = this.c.ensemble.supervisor
    const now = this.c.clock()
    this.record.restartTimes = [...this.record.restartTimes.filter(t => t > now - sup.windowMs), now]
    if (this.record.restartTimes.length > sup.maxRestarts) {
      throw new Error(`${why}; but ${sup.maxRestarts} restarts within ${sup.windowMs / 1000} s is the supervisor's limit`)
    }
    await this.transition('Provisioning', why)
    const e = this.c.ensemble
    const peers = new Set(nodes.map(n => this.record.placement[n].peer))
    await Promise.all([...peers].filter(p => !lost.includes(p)).map(async peer => { await this.revertOn(peer) }))
    // a provider's revert covers every node of the ensemble on it
    const moving = Object.keys(this.record.placement).filter(n => peers.has(this.record.placement[n].peer))
    for (const n of moving) {
      delete this.record.placement[n]
      for (const a of e.nodes[n].allocations) this.record.allocations[a].restarts++
    }
    // a fresh deadline for the recovery: as long as the deployment was given
    this.record.deadline = this.c.clock() + (this.record.deadline - this.record.createdAt)
    for (let attempt = 1; ; attempt++) {
      if (this.aborted) return
      const placement = await this.placeNodes(moving.map(n => e.nodes[n]))
      try {
        await this.commit(placement)
        await this.allocate(moving)
        break
      } catch (err) {
        await Promise.all([...new Set(moving.map(n => this.record.placement[n]?.peer).filter(p => p !== undefined))].map(async p => { await this.revertOn(p) }))
        if (err instanceof AttemptFailed && err.retry && this.left() > 0) {
          if (err.exclude !== undefined && !this.record.excluded.includes(err.exclude)) this.record.excluded.push(err.exclude)
          continue
        }
        throw err
      }
    }
    for (const a of live) {
      const h = this.record.allocations[a].handle
      if (h !== undefined) await this.call(h, '/dms/allocation/restart', {}).catch((err: unknown) => { this.c.log.warn({ err, allocation: a }, 'restart refused; it is started below if it ended') })
    }
    const again = new Set([...moving.flatMap(n => e.nodes[n].allocations), ...live])
    await this.startAll(again)
    for (const p of Object.values(this.record.placement)) if (!this.lastSeen.has(p.peer)) this.lastSeen.set(p.peer, this.c.clock())
    for (const p of peers) this.lastSeen.delete(p)
    await this.transition('Running', `recovered: ${[...again].join(', ')}`)
  }

  // ---- ending ----

  private async shutDown (reason: string): Promise<void> {
    await this.transition('ShuttingDown', reason)
    const unconfirmed = await this.revertAll('shut down')
    await this.transition('Completed', unconfirmed.length === 0 ? reason : `${reason}; ${unconfirmed.map(short).join(', ')} did not confirm the revert (it releases when it learns the deployment is not wanted)`)
  }

  private async releaseAll (): Promise<void> {
    await this.revertAll('released')
  }

  /** Reverts on every provider placed; returns those that did not confirm it. */
  private async revertAll (why: string): Promise<string[]> {
    const peers = [...new Set(Object.values(this.record.placement).map(p => p.peer))]
    const done = await Promise.all(peers.map(async peer => await this.revertOn(peer)))
    const unconfirmed = peers.filter((_, i) => !done[i])
    this.c.log.debug({ ensembleId: this.record.ensembleId, why, peers: peers.length, unconfirmed: unconfirmed.length }, 'reverted')
    return unconfirmed
  }

  /**
   * Reverts on `peer`, a few times over a short while; whether the provider confirmed it. One
   * that stays away releases by itself when it learns the deployment is not wanted.
   */
  private async revertOn (peer: string): Promise<boolean> {
    let last: unknown
    for (let i = 0; i < REVERT_TRIES; i++) {
      try {
        await this.c.actor.invoke(peer, '/dms/deployment/revert', { ensembleId: this.record.ensembleId }, { timeout: REVERT_CALL_MS })
        return true
      } catch (err) {
        last = err
        if (isDmsError(err, 'Unauthorized') || isDmsError(err, 'BadRequest')) break
      }
    }
    this.c.log.warn({ err: last, peer, ensembleId: this.record.ensembleId }, 'a provider did not confirm the revert')
    return false
  }

  private async fail (reason: string): Promise<void> {
    if (isFinal(this.record.status)) return
    await this.revertAll('failed').catch(() => {})
    await this.transition('Failed', reason)
  }

  // ---- plumbing ----

  private async call<T> (dest: string | Handle, path: string, payload: unknown): Promise<T> {
    // a call made just before the deadline still gets a fair chance (the deadline is overshot by that at most)
    const timeout = Math.max(MIN_CALL_MS, Math.min(PROVIDER_CALL_MS, this.left()))
    return await this.c.actor.invoke<T>(dest, path, payload, { timeout })
  }

  private left (): number { return this.record.deadline - this.c.clock() }

  private async transition (status: DeploymentStatus, reason: string): Promise<void> {
    if (isFinal(this.record.status)) return
    if (this.shutdownAsked && status !== 'ShuttingDown' && status !== 'Completed' && status !== 'Failed') return
    this.record.status = status
    this.record.reason = reason
    this.record.transitions.push({ at: this.c.clock(), status, reason })
    this.record.transitionCount++
    await this.save()
  }

  private async save (): Promise<void> { await this.c.save() }
}

interface Answer { peer: string, reply?: DirectReply, error?: string }
/** What supervision learns of an allocation each round. */
type Observed = Pick<AllocationView, 'status' | 'reason'>
type Gone = Observed & { gone: true }
type PlacedPorts = Array<{ private: number, public: number, protocol: 'tcp' | 'udp' }>

/** No provider for some node: the message says why, per node and per provider. */
class NoFit extends Error {}
/** The orchestration was stopped (shutdown, node stopping) in the middle of a step. */
class Aborted extends Error {}
class DeadlineError extends Error {}

/** What supervision makes of an allocation its provider no longer knows: failed, with why. */
function gone (why: string): Gone {
  return { status: 'failed', reason: `its provider no longer has it (${why})`, gone: true }
}

function isAllocationStatus (s: string): s is AllocationView['status'] {
  return ['pending', 'starting', 'running', 'completed', 'failed', 'stopped'].includes(s)
}

/** An allocation spec (specs/allocations.md) from an ensemble's allocation. */
export function specOf (a: EnsembleAllocation): Record<string, unknown> {
  const spec: Record<string, unknown> = { type: a.type, executor: a.executor, env: a.execution.env }
  if (a.execution.command !== undefined) spec.command = a.execution.command
  if (a.execution.image !== undefined) spec.image = a.execution.image
  if (a.execution.entrypoint !== undefined) spec.entrypoint = a.execution.entrypoint
  if (a.execution.workingDir !== undefined) spec.workingDir = a.execution.workingDir
  if (a.healthcheck !== undefined) spec.healthcheck = a.healthcheck
  if (a.restart !== undefined) spec.restart = a.restart
  return spec
}

function recoveryOf (e: Ensemble, allocation: string): string | undefined {
  const a = e.allocations[allocation]
  if (a.failureRecovery !== undefined) return a.failureRecovery
  return Object.values(e.nodes).find(n => n.allocations.includes(allocation))?.failureRecovery
}

function strategyOf (e: Ensemble, allocation: string): Ensemble['supervisor']['strategy'] {
  const r = recoveryOf(e, allocation)
  if (r === 'one_for_one') return 'OneForOne'
  if (r === 'all_for_one') return 'AllForOne'
  if (r === 'rest_for_one') return 'RestForOne'
  return e.supervisor.strategy
}

/** Every allocation that depends on `a`, directly or not. */
function dependentsOf (e: Ensemble, a: string): Set<string> {
  const out = new Set<string>()
  const visit = (x: string): void => {
    for (const b of Object.values(e.allocations)) if (b.dependsOn.includes(x) && !out.has(b.name)) { out.add(b.name); visit(b.name) }
  }
  visit(a)
  return out
}

/** A pinned node's provider as a PeerId (a did:key pin names the same key). */
function pinnedPeer (pin: string): string {
  return pin.startsWith('did:key:') ? peerIdFromDid(pin) : pin
}

async function delay (ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return
  await new Promise<void>(resolve => {
    const t = setTimeout(done, ms)
    function done (): void { clearTimeout(t); signal.removeEventListener('abort', done); resolve() }
    signal.addEventListener('abort', done, { once: true })
  })
}

async function aborted (signal: AbortSignal): Promise<void> {
  await new Promise<void>(resolve => { if (signal.aborted) resolve(); else signal.addEventListener('abort', () => { resolve() }, { once: true }) })
}
