import { z } from 'zod'
import {
  Conflict, Expired, InsufficientResources, InvalidArgument, InvalidState, NotFound, NotOnboarded, NotRunning
} from '../../lib/errors.js'
import type { Logger } from '../../lib/log.js'
import { formatSize } from '../../lib/units.js'
import type { Db } from '../../store/db.js'
import { checkId } from '../ids.js'
import { createSerial, type Serial } from '../serial.js'
import { jsonSublevel, type JsonDel, type JsonSublevel } from '../store.js'
import type { PortAllocator } from '../ports/index.js'
import {
  DEFAULT_SWEEP_INTERVAL_MS, LEDGER_SUBLEVEL, MAX_RESERVATION_TTL_MS
} from './constants.js'
import {
  clampAtZero, deficitOf, firstShort, resolve, ResourceVectorSchema, subtract, sum, ZERO,
  type Gpu, type ResourceRequest, type ResourceVector
} from './vector.js'

export * from './vector.js'

/**
 * The resource manager: the one persisted ledger of what this machine offers (onboarded), has
 * promised (reservations, each with an expiry) and has given (allocations). Free is derived,
 * never stored: onboarded − live reservations − allocations.
 *
 * Crash consistency: every change is one level batch (atomic: all of it or none of it is on disk
 * after a `kill -9` at any instant), and the in-memory mirror is updated only after the batch
 * resolved. Mutations run one at a time (a serial queue), so no two read-modify-writes interleave.
 */
export interface ResourceManager {
  start: () => Promise<void>
  stop: () => Promise<void>

  /**
   * Offers part of the machine. Refuses more than the machine has (`InsufficientResources` naming
   * the dimension and both figures). Re-onboarding changes the offer; shrinking below what is
   * reserved or allocated is refused unless `force`, which then cancels every reservation (the
   * promises can no longer be kept) and leaves allocations alone (see `LedgerSnapshot.deficit`).
   */
  onboard: (request: OnboardRequest, opts?: { force?: boolean }) => Promise<OnboardStatus>
  /**
   * Withdraws the offer. Refused with `InvalidState` while reservations or allocations exist,
   * unless `force` (reservations are cancelled, allocations stay until released).
   */
  offboard: (opts?: { force?: boolean }) => Promise<OffboardResult>
  status: () => OnboardStatus

  /** Resolves a request against free resources without changing anything; throws like reserve. */
  check: (request: ResourceRequest) => ResourceVector
  /** Promises resources to `id` until `ttlMs` from now; all dimensions or nothing. */
  reserve: (id: string, request: ResourceRequest, ttlMs: number) => Promise<Reservation>
  /**
   * Several reservations (a deployment's allocations) as one ledger operation: one batch, all of
   * them or none; the first that does not fit names itself in the refusal.
   */
  reserveAll: (items: ReadonlyArray<{ id: string, request: ResourceRequest }>, ttlMs: number) => Promise<Reservation[]>
  /**
   * Turns a live reservation into an allocation (idempotent for an already committed id).
   * Refused with `InvalidState` while the node is `stopping` or `stopped`.
   */
  commit: (id: string) => Promise<Allocation>
  /**
   * Frees a reservation or an allocation. Idempotent: clean-up paths run again after restarts,
   * so an unknown id answers `{ released: 'none' }` rather than failing. `also`: deletions of
   * another service written in the same batch (the allocation's ports: PortAllocator.releaseWith).
   */
  release: (id: string, also?: JsonDel[]) => Promise<Released>
  /**
   * Frees what `id` holds here and its port leases in `ports`, in one level batch: a `kill -9`
   * leaves both or neither. Idempotent as `release`.
   */
  releaseWithPorts: (id: string, ports: PortAllocator) => Promise<Released>
  snapshot: () => LedgerSnapshot
  /** Deletes expired reservations now (the timer does this for the daemon's life). */
  sweep: () => Promise<string[]>
  /** Called after every change that reached the disk; returns the unsubscribe function. */
  onChange: (listener: (snapshot: LedgerSnapshot) => void) => () => void
}

export const OnboardGpuSchema = z.object({
  index: z.number().int().nonnegative(),
  /** VRAM offered; absent means the whole device. */
  vramBytes: z.number().int().positive().optional()
})
export const OnboardRequestSchema = z.object({
  cpuCores: z.number().positive(),
  ramBytes: z.number().int().positive(),
  diskBytes: z.number().int().positive(),
  /** Absent: every GPU the machine has, whole. `[]`: none. */
  gpus: z.array(OnboardGpuSchema).optional()
})
export type OnboardRequest = z.input<typeof OnboardRequestSchema>

export interface OnboardStatus {
  onboarded: boolean
  resources?: ResourceVector
  /** Unix ms of the first onboarding (kept across re-onboarding). */
  since?: number
}

export interface OffboardResult {
  offboarded: true
  /** Reservations cancelled by a forced offboard. */
  cancelledReservations: string[]
  /** Allocations still running; their resources show as deficit until released. */
  remainingAllocations: string[]
}

export const ReservationSchema = z.object({
  id: z.string(),
  resources: ResourceVectorSchema,
  createdAt: z.number(),
  expiresAt: z.number()
})
export type Reservation = z.infer<typeof ReservationSchema>

export const AllocationSchema = z.object({
  id: z.string(),
  resources: ResourceVectorSchema,
  /** When the reservation was made, and when it became this allocation. */
  reservedAt: z.number(),
  createdAt: z.number()
})
export type Allocation = z.infer<typeof AllocationSchema>

const OnboardedRecordSchema = z.object({ resources: ResourceVectorSchema, since: z.number() })
type OnboardedRecord = z.infer<typeof OnboardedRecordSchema>

export interface LedgerSnapshot {
  /** The clock reading the snapshot was derived at (reservations expiring by then are gone). */
  at: number
  onboarded: ResourceVector | null
  since: number | null
  reservations: Reservation[]
  allocations: Allocation[]
  reserved: ResourceVector
  allocated: ResourceVector
  /** onboarded − reserved − allocated, floored at zero per dimension. */
  free: ResourceVector
  /**
   * How far reserved + allocated exceed onboarded, when they do. Only a forced shrink or offboard
   * can cause it (running allocations are never evicted by the ledger); nothing new fits until
   * releases bring it back to null.
   */
  deficit: ResourceVector | null
}

export interface ResourceManagerInit {
  /** Period of the expiry sweep (default DEFAULT_SWEEP_INTERVAL_MS). */
  sweepIntervalMs?: number
  /**
   * fsync every ledger batch (default true). A `kill -9` cannot lose an acknowledged write either
   * way (the OS holds it); fsync also survives power loss. Tests turn it off for speed.
   */
  syncWrites?: boolean
}

export interface ResourceManagerComponents {
  db: Db
  log: Logger
  /** Unix ms; injected so tests drive expiry without sleeping. */
  clock?: () => number
  /** What the machine can offer now (hardware service), checked on onboarding. */
  capacity: () => Promise<ResourceVector>
  /**
   * Whether work is admitted now (the node state): `new` for a reservation, `promised` for
   * committing one. Returns null to admit, or the reason to refuse with `InvalidState`.
   */
  admission?: (kind: 'new' | 'promised') => string | null
}

const RESERVATION = 'reservation/'
const ALLOCATION = 'allocation/'
const ONBOARDED = 'onboarded'

export interface Released { released: 'reservation' | 'allocation' | 'none', resources?: ResourceVector }

type LedgerOp =
  | { type: 'put', key: string, value: unknown }
  | { type: 'del', key: string }

class Ledger implements ResourceManager {
  private readonly db: Db
  private readonly sub: JsonSublevel
  private readonly log: Logger
  private readonly clock: () => number
  private readonly capacity: () => Promise<ResourceVector>
  private readonly admission: (kind: 'new' | 'promised') => string | null
  private readonly serial: Serial = createSerial()
  private readonly sweepIntervalMs: number
  private readonly syncWrites: boolean
  private readonly listeners = new Set<(s: LedgerSnapshot) => void>()

  // The in-memory mirror of the sublevel; changed only after the batch that records it resolved.
  private onboarded: OnboardedRecord | null = null
  private readonly reservations = new Map<string, Reservation>()
  private readonly allocations = new Map<string, Allocation>()

  private running = false
  private timer: NodeJS.Timeout | undefined
  private sweeping = false

  constructor (init: ResourceManagerInit, components: ResourceManagerComponents) {
    this.db = components.db
    this.sub = jsonSublevel(components.db, LEDGER_SUBLEVEL)
    this.log = components.log
    this.clock = components.clock ?? Date.now
    this.capacity = components.capacity
    this.admission = components.admission ?? (() => null)
    this.sweepIntervalMs = init.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS
    if (!(this.sweepIntervalMs > 0)) throw new InvalidArgument(`sweepIntervalMs must be positive, got ${this.sweepIntervalMs}`)
    this.syncWrites = init.syncWrites ?? true
  }

  async start (): Promise<void> {
    if (this.running) return
    await this.load()
    this.running = true
    this.timer = setInterval(() => { void this.sweepTick() }, this.sweepIntervalMs)
    // The sweep must never keep a process alive that is otherwise done.
    this.timer.unref()
  }

  async stop (): Promise<void> {
    if (!this.running) return
    clearInterval(this.timer)
    this.timer = undefined
    // Let queued mutations finish before the caller closes the db under them.
    await this.serial(async () => { this.running = false })
  }

  private async load (): Promise<void> {
    this.onboarded = null
    this.reservations.clear()
    this.allocations.clear()
    for await (const [key, value] of this.sub.iterator()) {
      // The ledger is written only by this class with schema-checked values; anything else means
      // the store was damaged, and guessing would lose track of resources: refuse to start.
      const bad = (why: string): never => { throw new InvalidState(`ledger record '${key}' is unreadable: ${why}`, { key }) }
      if (key === ONBOARDED) {
        const r = OnboardedRecordSchema.safeParse(value)
        this.onboarded = r.success ? r.data : bad(r.error.message)
      } else if (key.startsWith(RESERVATION)) {
        const r = ReservationSchema.safeParse(value)
        if (r.success) this.reservations.set(r.data.id, r.data); else bad(r.error.message)
      } else if (key.startsWith(ALLOCATION)) {
        const r = AllocationSchema.safeParse(value)
        if (r.success) this.allocations.set(r.data.id, r.data); else bad(r.error.message)
      } else {
        bad('unknown key')
      }
    }
    this.log.debug({ reservations: this.reservations.size, allocations: this.allocations.size, onboarded: this.onboarded !== null }, 'ledger loaded')
  }

  /** One level batch: the ledger's changes and `also` (another service's, written with them). */
  private async write (ops: LedgerOp[], also: JsonDel[] = []): Promise<void> {
    if (ops.length === 0 && also.length === 0) return
    await this.db.batch([...ops.map(op => op.type === 'put'
      ? { type: 'put' as const, sublevel: this.sub, key: op.key, value: op.value }
      : { type: 'del' as const, sublevel: this.sub, key: op.key }), ...also], { sync: this.syncWrites })
  }

  /** Runs a mutation in the queue, then tells listeners; refuses when stopped. */
  private async mutate<T> (fn: () => Promise<T>): Promise<T> {
    const result = await this.serial(async () => {
      if (!this.running) throw new NotRunning('the resource manager is not running')
      return await fn()
    })
    this.notify()
    return result
  }

  private notify (): void {
    if (this.listeners.size === 0) return
    const snap = this.snapshot()
    for (const l of this.listeners) {
      try { l(snap) } catch (err) { this.log.error({ err }, 'ledger change listener failed') }
    }
  }

  onChange (listener: (s: LedgerSnapshot) => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  // ---- derived views ----

  private live (now: number): Reservation[] {
    return [...this.reservations.values()].filter(r => r.expiresAt > now)
  }

  private usedAt (now: number): ResourceVector {
    return sum([...this.live(now), ...this.allocations.values()].map(x => x.resources), this.onboarded?.resources.gpus)
  }

  /** Unclamped free; negative only in a deficit. */
  private rawFree (now: number): ResourceVector {
    return subtract(this.onboarded?.resources ?? ZERO, this.usedAt(now))
  }

  snapshot (): LedgerSnapshot {
    const now = this.clock()
    const catalog: Gpu[] = this.onboarded?.resources.gpus ?? []
    const reservations = this.live(now).sort(byId)
    const allocations = [...this.allocations.values()].sort(byId)
    const raw = this.rawFree(now)
    const free = clampAtZero(raw)
    free.gpus = free.gpus.filter(g => catalog.some(c => c.index === g.index))
    return {
      at: now,
      onboarded: this.onboarded?.resources ?? null,
      since: this.onboarded?.since ?? null,
      reservations,
      allocations,
      reserved: sum(reservations.map(r => r.resources), catalog),
      allocated: sum(allocations.map(a => a.resources), catalog),
      free,
      deficit: deficitOf(raw)
    }
  }

  status (): OnboardStatus {
    return this.onboarded === null
      ? { onboarded: false }
      : { onboarded: true, resources: this.onboarded.resources, since: this.onboarded.since }
  }

  check (request: ResourceRequest): ResourceVector {
    this.assertRunning()
    if (this.onboarded === null) throw new NotOnboarded('this machine has not onboarded any resources')
    return resolve(request, this.rawFree(this.clock()))
  }

  // ---- onboarding ----

  async onboard (request: OnboardRequest, opts: { force?: boolean } = {}): Promise<OnboardStatus> {
    const parsed = OnboardRequestSchema.safeParse(request)
    if (!parsed.success) throw new InvalidArgument(`bad onboarding request: ${z.prettifyError(parsed.error)}`)
    const req = parsed.data
    return await this.mutate(async () => {
      const machine = await this.capacity()
      const offer = offerWithin(req, machine)
      const now = this.clock()
      const used = this.usedAt(now)
      const ops: LedgerOp[] = []
      const short = firstShort(used, offer)
      if (short !== null) {
        if (opts.force !== true) {
          throw new InsufficientResources(
            `cannot shrink ${short.dimension}${short.gpuIndex !== undefined ? ` of GPU ${short.gpuIndex}` : ''} to ${showDim(short.dimension, short.available)}: ${showDim(short.dimension, short.requested)} is reserved or allocated (use force)`,
            { dimension: short.dimension, offered: short.available, inUse: short.requested, ...(short.gpuIndex !== undefined ? { gpuIndex: short.gpuIndex } : {}) })
        }
        for (const id of this.reservations.keys()) ops.push({ type: 'del', key: RESERVATION + id })
      }
      const record: OnboardedRecord = { resources: offer, since: this.onboarded?.since ?? now }
      ops.push({ type: 'put', key: ONBOARDED, value: record })
      await this.write(ops)
      if (short !== null) {
        this.log.warn({ cancelled: [...this.reservations.keys()] }, 'forced shrink cancelled reservations')
        this.reservations.clear()
      }
      this.onboarded = record
      this.log.info({ resources: offer }, 'onboarded')
      return this.status()
    })
  }

  async offboard (opts: { force?: boolean } = {}): Promise<OffboardResult> {
    return await this.mutate(async () => {
      if (this.onboarded === null) throw new NotOnboarded('this machine has not onboarded any resources')
      const now = this.clock()
      const live = this.live(now).map(r => r.id)
      const allocs = [...this.allocations.keys()]
      if (opts.force !== true && (live.length > 0 || allocs.length > 0)) {
        throw new InvalidState(
          `cannot offboard: ${live.length} reservation(s) and ${allocs.length} allocation(s) hold resources (use force)`,
          { reservations: live, allocations: allocs })
      }
      // Expired-but-unswept reservations go too: nothing may outlive the offer it was made from.
      const cancelled = [...this.reservations.keys()]
      await this.write([{ type: 'del', key: ONBOARDED }, ...cancelled.map(id => ({ type: 'del' as const, key: RESERVATION + id }))])
      this.onboarded = null
      this.reservations.clear()
      this.log.info({ cancelled, remaining: allocs }, 'offboarded')
      return { offboarded: true, cancelledReservations: live.sort(), remainingAllocations: allocs.sort() }
    })
  }

  // ---- reservations and allocations ----

  async reserve (id: string, request: ResourceRequest, ttlMs: number): Promise<Reservation> {
    return (await this.reserveAll([{ id, request }], ttlMs))[0]
  }

  async reserveAll (items: ReadonlyArray<{ id: string, request: ResourceRequest }>, ttlMs: number): Promise<Reservation[]> {
    for (const { id } of items) checkId(id)
    if (new Set(items.map(i => i.id)).size !== items.length) throw new InvalidArgument('an id is named twice in one reservation', { ids: items.map(i => i.id) })
    if (!Number.isFinite(ttlMs) || ttlMs <= 0 || ttlMs > MAX_RESERVATION_TTL_MS) {
      throw new InvalidArgument(`reservation ttl must be in (0, ${MAX_RESERVATION_TTL_MS}] ms, got ${ttlMs}`, { ttlMs })
    }
    return await this.mutate(async () => {
      const refusal = this.admission('new')
      if (refusal !== null) throw new InvalidState(`not taking new work: ${refusal}`, { id: items[0]?.id })
      if (this.onboarded === null) throw new NotOnboarded('this machine has not onboarded any resources')
      const now = this.clock()
      let free = this.rawFree(now)
      const made: Reservation[] = []
      for (const { id, request } of items) {
        const existing = this.reservations.get(id)
        // An expired reservation's id is free to reuse; its record is overwritten in the same batch.
        if ((existing !== undefined && existing.expiresAt > now) || this.allocations.has(id)) {
          throw new Conflict(`id '${id}' already holds resources`, { id })
        }
        const resources = resolve(request, free, `reservation '${id}'`)
        free = subtract(free, resources)
        made.push({ id, resources, createdAt: now, expiresAt: now + ttlMs })
      }
      await this.write(made.map(r => ({ type: 'put' as const, key: RESERVATION + r.id, value: r })))
      for (const r of made) this.reservations.set(r.id, r)
      return made
    })
  }

  async commit (id: string): Promise<Allocation> {
    checkId(id)
    return await this.mutate(async () => {
      const done = this.allocations.get(id)
      if (done !== undefined) return done
      const r = this.reservations.get(id)
      if (r === undefined) throw new NotFound(`no reservation '${id}'`, { id })
      // Checked in this queue, so the drain check (which counts the reservation as in flight)
      // sees either the reservation or the allocation, never neither.
      const refusal = this.admission('promised')
      if (refusal !== null) throw new InvalidState(`not turning reservations into allocations: ${refusal}`, { id })
      const now = this.clock()
      if (r.expiresAt <= now) {
        await this.write([{ type: 'del', key: RESERVATION + id }])
        this.reservations.delete(id)
        throw new Expired(`reservation '${id}' expired at ${new Date(r.expiresAt).toISOString()}`, { id, expiresAt: r.expiresAt })
      }
      const allocation: Allocation = { id, resources: r.resources, reservedAt: r.createdAt, createdAt: now }
      // One batch: the resources are counted exactly once, as reservation or as allocation.
      await this.write([{ type: 'del', key: RESERVATION + id }, { type: 'put', key: ALLOCATION + id, value: allocation }])
      this.reservations.delete(id)
      this.allocations.set(id, allocation)
      return allocation
    })
  }

  async releaseWithPorts (id: string, ports: PortAllocator): Promise<Released> {
    return (await ports.releaseWith(id, async (deletions) => await this.release(id, deletions))).result
  }

  async release (id: string, also: JsonDel[] = []): Promise<Released> {
    checkId(id)
    return await this.mutate(async () => {
      const a = this.allocations.get(id)
      if (a !== undefined) {
        await this.write([{ type: 'del', key: ALLOCATION + id }], also)
        this.allocations.delete(id)
        return { released: 'allocation' as const, resources: a.resources }
      }
      const r = this.reservations.get(id)
      if (r !== undefined) {
        await this.write([{ type: 'del', key: RESERVATION + id }], also)
        this.reservations.delete(id)
        return { released: 'reservation' as const, resources: r.resources }
      }
      await this.write([], also)
      return { released: 'none' as const }
    })
  }

  async sweep (): Promise<string[]> {
    return await this.mutate(async () => {
      const now = this.clock()
      const expired = [...this.reservations.values()].filter(r => r.expiresAt <= now).map(r => r.id)
      if (expired.length === 0) return []
      await this.write(expired.map(id => ({ type: 'del' as const, key: RESERVATION + id })))
      for (const id of expired) this.reservations.delete(id)
      this.log.debug({ expired }, 'reservations expired')
      return expired
    })
  }

  private async sweepTick (): Promise<void> {
    // A pass still waiting in the queue covers this tick too.
    if (this.sweeping || !this.running) return
    this.sweeping = true
    try {
      await this.sweep()
    } catch (err) {
      // One failed pass (a db hiccup) must not end the sweep: log and try again next tick.
      this.log.error({ err }, 'reservation sweep failed')
    } finally {
      this.sweeping = false
    }
  }

  private assertRunning (): void {
    if (!this.running) throw new NotRunning('the resource manager is not running')
  }
}

/** A figure of one dimension for a message: sizes in units, cores as they are. */
function showDim (dimension: string, x: number): string {
  return dimension === 'cpuCores' ? `${x} cores` : formatSize(x)
}

function byId (a: { id: string }, b: { id: string }): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0
}

/**
 * The offer, checked against the machine: every dimension at most what the machine has, GPUs
 * named by index and given at most their VRAM. Refusals name the dimension and both figures.
 */
function offerWithin (req: z.output<typeof OnboardRequestSchema>, machine: ResourceVector): ResourceVector {
  // people read the message (`64 GiB asked, the machine has 23.5 GiB`); the fields keep exact figures
  const over = (dimension: string, requested: number, available: number, show: (x: number) => string): never => {
    throw new InsufficientResources(`cannot onboard ${dimension}: ${show(requested)} asked, the machine has ${show(available)}`, { dimension, requested, available })
  }
  if (req.cpuCores > machine.cpuCores) over('cpuCores', req.cpuCores, machine.cpuCores, x => `${x} cores`)
  if (req.ramBytes > machine.ramBytes) over('ramBytes', req.ramBytes, machine.ramBytes, formatSize)
  if (req.diskBytes > machine.diskBytes) over('diskBytes', req.diskBytes, machine.diskBytes, x => `${formatSize(x)} free`)
  const wanted = req.gpus ?? machine.gpus.map(g => ({ index: g.index, vramBytes: undefined }))
  const gpus: Gpu[] = []
  for (const w of wanted) {
    const dev = machine.gpus.find(g => g.index === w.index)
    if (dev === undefined) {
      throw new InsufficientResources(`cannot onboard GPU ${w.index}: the machine has ${machine.gpus.length === 0 ? 'no GPUs' : `GPUs ${machine.gpus.map(g => g.index).join(', ')}`}`,
        { dimension: 'gpus', gpuIndex: w.index, requested: 1, available: machine.gpus.length })
    }
    if (gpus.some(g => g.index === w.index)) throw new InvalidArgument(`GPU ${w.index} is named twice`, { gpuIndex: w.index })
    const vram = w.vramBytes ?? dev.vramBytes
    if (vram > dev.vramBytes) {
      throw new InsufficientResources(`cannot onboard ${formatSize(vram)} of VRAM on GPU ${w.index}: it has ${formatSize(dev.vramBytes)}`,
        { dimension: 'gpus', gpuIndex: w.index, requested: vram, available: dev.vramBytes })
    }
    gpus.push({ ...dev, vramBytes: vram })
  }
  gpus.sort((a, b) => a.index - b.index)
  return { cpuCores: req.cpuCores, ramBytes: req.ramBytes, diskBytes: req.diskBytes, gpus }
}

export function createResourceManager (init: ResourceManagerInit, components: ResourceManagerComponents): ResourceManager {
  return new Ledger(init, components)
}
