import { z } from 'zod'
import { InvalidArgument, InvalidConfig, InvalidState, NotRunning } from '../../lib/errors.js'
import type { Logger } from '../../lib/log.js'
import type { Db } from '../../store/db.js'
import { createSerial } from '../serial.js'
import { jsonSublevel, type JsonSublevel } from '../store.js'
import { checkLabelKey, checkLabelValue, MAX_LABELS } from './labels.js'

export { parseLabel, checkLabelKey, checkLabelValue, MAX_LABELS } from './labels.js'

/**
 * The node's state (as NkCLUSTER and Bacalhau have it):
 * - `ready`    takes new work;
 * - `standby`  takes no new work, keeps running what it has;
 * - `stopping` takes no new work, finishes what runs, then becomes `stopped` by itself;
 * - `stopped`  nothing runs and nothing new is taken.
 */
export const NODE_STATES = ['ready', 'standby', 'stopping', 'stopped'] as const
export const NodeStateSchema = z.enum(NODE_STATES)
export type NodeState = z.infer<typeof NodeStateSchema>

/**
 * The transitions a caller may ask for (setting the current state again is a no-op). `stopped`
 * is reached only through `stopping` — directly when nothing runs — so running work is never
 * abandoned by a state change; `stopping` may be called off back to `ready` or `standby`.
 */
export const TRANSITIONS: Readonly<Record<NodeState, readonly NodeState[]>> = {
  ready: ['standby', 'stopping'],
  standby: ['ready', 'stopping'],
  stopping: ['ready', 'standby', 'stopped'],
  stopped: ['ready', 'standby']
}

/**
 * What is asked of the node: `new` work (a reservation: a new promise) is taken only when
 * `ready`; a `promised` one (committing a reservation made earlier into an allocation) is kept in
 * `ready` and `standby`, and refused once the node is `stopping` or `stopped`: a node on its way
 * down starts nothing, and a reservation it still holds only waits to be released or to expire.
 */
export type Admission = 'new' | 'promised'

export const LabelsSchema = z.record(z.string(), z.string())
export type Labels = z.infer<typeof LabelsSchema>

export interface NodeStatus { state: NodeState, since: number, labels: Labels }

export interface NodeStateService {
  start: () => Promise<void>
  stop: () => Promise<void>
  get: () => NodeStatus
  /**
   * Moves to `state` if TRANSITIONS allows it (else `InvalidState`). `stopping` becomes `stopped`
   * at once when nothing is in flight (see `running`); `stopped` from `stopping` is refused while something is.
   */
  set: (state: NodeState) => Promise<NodeStatus & { previous: NodeState }>
  /** Null when work of this kind (default `new`) is admitted now, else why not (see Admission). */
  refusal: (kind?: Admission) => string | null
  /** Adds or replaces labels (all validated first; none applied if one is bad). */
  setLabels: (labels: Labels) => Promise<Labels>
  /** Removes labels by key; keys not present are ignored. */
  removeLabels: (keys: string[]) => Promise<Labels>
  /**
   * The hook for what runs: call it when work ends. In `stopping` with nothing left running the
   * node becomes `stopped`. Returns the state after the check.
   */
  checkDrained: () => Promise<NodeState>
}

export interface NodeStateInit {
  /** State of a node that has never recorded one (default `ready`). */
  initialState?: NodeState
  syncWrites?: boolean
}

export interface NodeStateComponents {
  db: Db
  log: Logger
  clock?: () => number
  /**
   * How much work is still in flight: allocations, and live reservations (a reservation may
   * still become an allocation until it is released or expires, so a node holding one has not
   * drained). `stopping` waits for zero. Default: nothing.
   */
  running?: () => number
}

const StateRecordSchema = z.object({ state: NodeStateSchema, since: z.number() })
type StateRecord = z.infer<typeof StateRecordSchema>
const STATE = 'state'
const LABELS = 'labels'
export const NODE_STATE_SUBLEVEL = 'node-state'

class NodeStateImpl implements NodeStateService {
  private readonly db: Db
  private readonly sub: JsonSublevel
  private readonly log: Logger
  private readonly clock: () => number
  private readonly running: () => number
  private readonly initialState: NodeState
  private readonly syncWrites: boolean
  private readonly serial = createSerial()
  private current: StateRecord = { state: 'ready', since: 0 }
  private labels: Labels = {}
  private started = false

  constructor (init: NodeStateInit, components: NodeStateComponents) {
    this.db = components.db
    this.sub = jsonSublevel(components.db, NODE_STATE_SUBLEVEL)
    this.log = components.log
    this.clock = components.clock ?? Date.now
    this.running = components.running ?? (() => 0)
    this.initialState = init.initialState ?? 'ready'
    this.syncWrites = init.syncWrites ?? true
  }

  async start (): Promise<void> {
    if (this.started) return
    const [s, l] = await Promise.all([this.sub.get(STATE), this.sub.get(LABELS)])
    if (s === undefined) {
      this.current = { state: this.initialState, since: this.clock() }
      await this.write({ [STATE]: this.current })
    } else {
      const r = StateRecordSchema.safeParse(s)
      if (!r.success) throw new InvalidConfig(`stored node state is unreadable: ${r.error.message}`, { key: STATE })
      this.current = r.data
    }
    if (l !== undefined) {
      const r = LabelsSchema.safeParse(l)
      if (!r.success) throw new InvalidConfig(`stored labels are unreadable: ${r.error.message}`, { key: LABELS })
      this.labels = r.data
    }
    this.started = true
    // A daemon killed while stopping may have nothing left to wait for.
    await this.checkDrained()
  }

  async stop (): Promise<void> {
    if (!this.started) return
    await this.serial(async () => { this.started = false })
  }

  get (): NodeStatus {
    return { state: this.current.state, since: this.current.since, labels: { ...this.labels } }
  }

  refusal (kind: Admission = 'new'): string | null {
    const state = this.current.state
    const admitted = kind === 'new' ? state === 'ready' : state === 'ready' || state === 'standby'
    return admitted ? null : `node is ${state}`
  }

  async set (state: NodeState): Promise<NodeStatus & { previous: NodeState }> {
    const parsed = NodeStateSchema.safeParse(state)
    if (!parsed.success) throw new InvalidArgument(`unknown node state '${String(state)}' (one of ${NODE_STATES.join(', ')})`)
    return await this.locked(async () => {
      const previous = this.current.state
      // Asking to stop again while stopping re-checks: it may be done by now.
      if (state === 'stopping' && previous === 'stopping' && this.running() === 0) await this.transition('stopped')
      if (state !== previous) {
        if (!TRANSITIONS[previous].includes(state)) {
          throw new InvalidState(`cannot go from ${previous} to ${state} (allowed: ${TRANSITIONS[previous].join(', ')})`, { from: previous, to: state })
        }
        let next = state
        const busy = this.running()
        if (state === 'stopped' && busy > 0) {
          throw new InvalidState(`cannot stop: ${busy} allocation(s) or reservation(s) are still held; the node becomes stopped when they end`, { from: previous, to: state, running: busy })
        }
        if (state === 'stopping' && busy === 0) next = 'stopped'
        await this.transition(next)
      }
      return { ...this.get(), previous }
    })
  }

  async checkDrained (): Promise<NodeState> {
    return await this.locked(async () => {
      if (this.current.state === 'stopping' && this.running() === 0) await this.transition('stopped')
      return this.current.state
    })
  }

  async setLabels (labels: Labels): Promise<Labels> {
    const parsed = LabelsSchema.safeParse(labels)
    if (!parsed.success) throw new InvalidArgument('labels must map strings to strings')
    for (const [k, v] of Object.entries(parsed.data)) { checkLabelKey(k); checkLabelValue(k, v) }
    return await this.locked(async () => {
      const next = { ...this.labels, ...parsed.data }
      const count = Object.keys(next).length
      if (count > MAX_LABELS) throw new InvalidArgument(`a node carries at most ${MAX_LABELS} labels; this would make ${count}`)
      await this.write({ [LABELS]: sortKeys(next) })
      this.labels = sortKeys(next)
      return { ...this.labels }
    })
  }

  async removeLabels (keys: string[]): Promise<Labels> {
    for (const k of keys) checkLabelKey(k)
    return await this.locked(async () => {
      const next = { ...this.labels }
      for (const k of keys) Reflect.deleteProperty(next, k)
      await this.write({ [LABELS]: next })
      this.labels = next
      return { ...this.labels }
    })
  }

  private async transition (state: NodeState): Promise<void> {
    const record = { state, since: this.clock() }
    await this.write({ [STATE]: record })
    this.log.info({ from: this.current.state, to: state }, 'node state changed')
    this.current = record
  }

  private async write (values: Record<string, unknown>): Promise<void> {
    await this.db.batch(Object.entries(values).map(([key, value]) => ({ type: 'put' as const, sublevel: this.sub, key, value })), { sync: this.syncWrites })
  }

  private async locked<T> (fn: () => Promise<T>): Promise<T> {
    return await this.serial(async () => {
      if (!this.started) throw new NotRunning('the node state service is not running')
      return await fn()
    })
  }
}

function sortKeys (labels: Labels): Labels {
  return Object.fromEntries(Object.entries(labels).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0))
}

export function createNodeStateService (init: NodeStateInit, components: NodeStateComponents): NodeStateService {
  return new NodeStateImpl(init, components)
}
