import { randomInt } from 'node:crypto'
import { z } from 'zod'
import { InvalidArgument, InvalidConfig, NotRunning, PortUnavailable } from '../../lib/errors.js'
import type { Logger } from '../../lib/log.js'
import type { Db } from '../../store/db.js'
import { createSerial } from '../serial.js'
import { jsonSublevel, type JsonDel, type JsonSublevel } from '../store.js'
import { checkId } from '../ids.js'
import { DEFAULT_PORT_RANGE, MAX_PORTS_PER_REQUEST, MAX_PROBES_PER_REQUEST, PORTS_SUBLEVEL } from './constants.js'
import { isPortFreeOnOs } from './os-check.js'

/**
 * The port allocator: hands TCP ports of a configured range to allocations, all or nothing,
 * each checked free on the OS, and persists the leases (one level batch per change) so they
 * survive restarts. A port is leased to exactly one allocation id at a time.
 */
export interface PortAllocator {
  start: () => Promise<void>
  stop: () => Promise<void>
  readonly range: PortRange
  /**
   * Leases the given `ports` and `dynamic` more chosen from the range to `allocationId`; all of
   * them or none (`PortUnavailable` naming the port, or how many could be found). Adds to what
   * the id already holds. Returns the ports this call leased, ascending.
   */
  reserve: (allocationId: string, request: PortRequest) => Promise<number[]>
  /** Ends every lease of the id; returns the freed ports (empty when it held none). */
  release: (allocationId: string) => Promise<number[]>
  /**
   * Ends every lease of the id in a batch that `write` makes together with its own changes: it
   * gets the deletions to include and must have written them when it resolves (or throw, and no
   * lease ends). The port table stays locked meanwhile.
   */
  releaseWith: <T>(allocationId: string, write: (deletions: JsonDel[]) => Promise<T>) => Promise<{ ports: number[], result: T }>
  /** The ports an allocation holds, ascending. */
  of: (allocationId: string) => number[]
  list: () => PortLease[]
}

export interface PortRange { min: number, max: number }

export const PortRequestSchema = z.object({
  ports: z.array(z.number().int().min(1).max(65535)).default([]),
  dynamic: z.number().int().nonnegative().default(0)
})
export type PortRequest = z.input<typeof PortRequestSchema>

export const PortLeaseSchema = z.object({ port: z.number().int(), allocationId: z.string(), since: z.number() })
export type PortLease = z.infer<typeof PortLeaseSchema>

export interface PortAllocatorInit {
  /** Inclusive range leased from (default DEFAULT_PORT_RANGE, from config `ports`). */
  range?: PortRange
  /** See ResourceManagerInit.syncWrites. */
  syncWrites?: boolean
  /** Whether the OS has the port free; injectable so a test can model a busy range cheaply. */
  isFree?: (port: number) => Promise<boolean>
}

export interface PortAllocatorComponents {
  db: Db
  log: Logger
  clock?: () => number
}

/** Ports are keyed zero-padded so the sublevel iterates them in numeric order. */
const key = (port: number): string => String(port).padStart(5, '0')

class Allocator implements PortAllocator {
  readonly range: PortRange
  private readonly db: Db
  private readonly sub: JsonSublevel
  private readonly log: Logger
  private readonly clock: () => number
  private readonly isFree: (port: number) => Promise<boolean>
  private readonly syncWrites: boolean
  private readonly serial = createSerial()
  private readonly leases = new Map<number, PortLease>()
  private running = false

  constructor (init: PortAllocatorInit, components: PortAllocatorComponents) {
    const range = init.range ?? DEFAULT_PORT_RANGE
    if (!Number.isInteger(range.min) || !Number.isInteger(range.max) || range.min < 1 || range.max > 65535 || range.min > range.max) {
      throw new InvalidConfig(`port range must be integers within 1–65535 with min ≤ max, got ${range.min}–${range.max}`, { key: 'ports' })
    }
    this.range = { min: range.min, max: range.max }
    this.db = components.db
    this.sub = jsonSublevel(components.db, PORTS_SUBLEVEL)
    this.log = components.log
    this.clock = components.clock ?? Date.now
    this.isFree = init.isFree ?? isPortFreeOnOs
    this.syncWrites = init.syncWrites ?? true
  }

  async start (): Promise<void> {
    if (this.running) return
    this.leases.clear()
    for await (const [k, v] of this.sub.iterator()) {
      const r = PortLeaseSchema.safeParse(v)
      // Leases are written only here, schema-checked; a damaged one would let a port be handed
      // out twice, so refuse to start rather than guess.
      if (!r.success) throw new InvalidConfig(`port lease '${k}' is unreadable: ${r.error.message}`, { key: k })
      this.leases.set(r.data.port, r.data)
    }
    this.running = true
  }

  async stop (): Promise<void> {
    if (!this.running) return
    await this.serial(async () => { this.running = false })
  }

  async reserve (allocationId: string, request: PortRequest): Promise<number[]> {
    checkId(allocationId, 'allocation id')
    const parsed = PortRequestSchema.safeParse(request)
    if (!parsed.success) throw new InvalidArgument(`bad port request: ${z.prettifyError(parsed.error)}`)
    const { ports, dynamic } = parsed.data
    if (new Set(ports).size !== ports.length) throw new InvalidArgument('a port is named twice', { ports: ports.map(String) })
    if (ports.length + dynamic > MAX_PORTS_PER_REQUEST) {
      throw new InvalidArgument(`at most ${MAX_PORTS_PER_REQUEST} ports per request, asked ${ports.length + dynamic}`)
    }
    return await this.serial(async () => {
      if (!this.running) throw new NotRunning('the port allocator is not running')
      for (const p of ports) {
        // The range is what the operator gave dms to hand out; a port outside it is not ours.
        if (p < this.range.min || p > this.range.max) {
          throw new PortUnavailable(`port ${p} is outside the allocator's range ${this.range.min}–${this.range.max}`, { port: p })
        }
        const held = this.leases.get(p)
        if (held !== undefined) throw new PortUnavailable(`port ${p} is leased to '${held.allocationId}'`, { port: p, holder: held.allocationId })
        if (!(await this.isFree(p))) throw new PortUnavailable(`port ${p} is in use by another process`, { port: p })
      }
      const chosen = new Set(ports)
      if (dynamic > 0) await this.pickDynamic(dynamic, chosen)
      const since = this.clock()
      const leased = [...chosen].sort((a, b) => a - b)
      const entries = leased.map(port => ({ port, allocationId, since }))
      await this.db.batch(entries.map(e => ({ type: 'put' as const, sublevel: this.sub, key: key(e.port), value: e })), { sync: this.syncWrites })
      for (const e of entries) this.leases.set(e.port, e)
      this.log.debug({ allocationId, ports: leased }, 'ports leased')
      return leased
    })
  }

  /** Adds `n` free ports of the range to `chosen`, scanning from a random point (bounded). */
  private async pickDynamic (n: number, chosen: Set<number>): Promise<void> {
    const size = this.range.max - this.range.min + 1
    // A random start spreads leases over the range, so a port just released (whose old client
    // may still connect to it) is not the next one handed out.
    const start = randomInt(size)
    const budget = Math.min(size, MAX_PROBES_PER_REQUEST)
    let found = 0
    let probes = 0
    for (let i = 0; i < size && probes < budget && found < n; i++) {
      const p = this.range.min + ((start + i) % size)
      if (chosen.has(p) || this.leases.has(p)) continue
      probes++
      if (await this.isFree(p)) { chosen.add(p); found++ }
    }
    if (found < n) {
      throw new PortUnavailable(`found ${found} of ${n} free ports in ${this.range.min}–${this.range.max} (${this.leases.size} leased, ${probes} probed)`,
        { requested: n, available: found })
    }
  }

  async release (allocationId: string): Promise<number[]> {
    const { ports } = await this.releaseWith(allocationId, async (deletions) => {
      if (deletions.length > 0) await this.db.batch(deletions, { sync: this.syncWrites })
    })
    return ports
  }

  async releaseWith<T> (allocationId: string, write: (deletions: JsonDel[]) => Promise<T>): Promise<{ ports: number[], result: T }> {
    checkId(allocationId, 'allocation id')
    return await this.serial(async () => {
      if (!this.running) throw new NotRunning('the port allocator is not running')
      const ports = this.of(allocationId)
      const result = await write(ports.map(p => ({ type: 'del' as const, sublevel: this.sub, key: key(p) })))
      for (const p of ports) this.leases.delete(p)
      if (ports.length > 0) this.log.debug({ allocationId, ports }, 'ports released')
      return { ports, result }
    })
  }

  of (allocationId: string): number[] {
    return [...this.leases.values()].filter(l => l.allocationId === allocationId).map(l => l.port).sort((a, b) => a - b)
  }

  list (): PortLease[] {
    return [...this.leases.values()].sort((a, b) => a.port - b.port)
  }
}

export function createPortAllocator (init: PortAllocatorInit, components: PortAllocatorComponents): PortAllocator {
  return new Allocator(init, components)
}

export { isPortFreeOnOs }
