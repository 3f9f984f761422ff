import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { isDmsError } from '../../src/lib/errors.js'
import { createResourceManager, type LedgerSnapshot, type ResourceManager, type ResourceVector } from '../../src/services/resources/index.js'
import type { Db } from '../../src/store/db.js'
import { GiB, log, MACHINE, manualClock, tempDb } from './helpers.js'

/**
 * Model-based property test of the ledger: random sequences of onboard / reserve / commit /
 * release / clock / sweep / offboard / restart run against the real manager on a real level db
 * and against a tiny independent model written here in integer units. After every step:
 * - the manager accepted exactly the operations the model accepts (no false refusals, no
 *   over-commitment);
 * - the live reservations and allocations are exactly the model's (nothing lost, nothing extra);
 * - onboarded = reserved + allocated + free in every dimension (nothing counted twice), and free
 *   is never negative unless a forced operation left running allocations beyond the offer.
 */

const IDS = ['a', 'b', 'c', 'd', 'e', 'f'] as const
const UNIT = GiB / 4

type Op =
  | { kind: 'onboard', cpuMilli: number, ram: number, disk: number, gpus: Array<{ index: number, vram: number }> | null, force: boolean }
  | { kind: 'reserve', id: string, cpuMilli: number, ram: number, disk: number, gpus: Array<{ index: number, vram: number }>, ttl: number }
  | { kind: 'commit', id: string }
  | { kind: 'release', id: string }
  | { kind: 'advance', ms: number }
  | { kind: 'sweep' }
  | { kind: 'offboard', force: boolean }
  | { kind: 'restart' }

/** Model vectors in integer units: milli-cores, UNITs of RAM/disk/VRAM, VRAM per GPU index. */
interface MVec { cpu: number, ram: number, disk: number, gpu: Map<number, number> }
interface Model {
  now: number
  onboarded: MVec | null
  res: Map<string, { v: MVec, exp: number }>
  alloc: Map<string, MVec>
}

const MACHINE_M: MVec = {
  cpu: MACHINE.cpuCores * 1000,
  ram: MACHINE.ramBytes / UNIT,
  disk: MACHINE.diskBytes / UNIT,
  gpu: new Map(MACHINE.gpus.map(g => [g.index, g.vramBytes / UNIT]))
}

function used (m: Model): MVec {
  const u: MVec = { cpu: 0, ram: 0, disk: 0, gpu: new Map() }
  const add = (v: MVec): void => {
    u.cpu += v.cpu; u.ram += v.ram; u.disk += v.disk
    for (const [i, x] of v.gpu) u.gpu.set(i, (u.gpu.get(i) ?? 0) + x)
  }
  for (const r of m.res.values()) if (r.exp > m.now) add(r.v)
  for (const a of m.alloc.values()) add(a)
  return u
}

/** Does `need` fit within `cap − held`? GPUs only on devices `cap` has. */
function fitsIn (need: MVec, cap: MVec, held: MVec): boolean {
  if (need.cpu > cap.cpu - held.cpu || need.ram > cap.ram - held.ram || need.disk > cap.disk - held.disk) return false
  for (const [i, x] of need.gpu) {
    const c = cap.gpu.get(i)
    if (c === undefined || x > c - (held.gpu.get(i) ?? 0)) return false
  }
  return true
}

const ZERO_M: MVec = { cpu: 0, ram: 0, disk: 0, gpu: new Map() }

/** Applies op to the model; returns whether the model accepts it. */
function step (m: Model, op: Op): boolean {
  switch (op.kind) {
    case 'onboard': {
      const gpu = op.gpus === null ? new Map(MACHINE_M.gpu) : new Map(op.gpus.map(g => [g.index, g.vram]))
      if (op.gpus !== null && new Set(op.gpus.map(g => g.index)).size !== op.gpus.length) return false
      const offer: MVec = { cpu: op.cpuMilli, ram: op.ram, disk: op.disk, gpu }
      if (!fitsIn(offer, MACHINE_M, ZERO_M)) return false
      const u = used(m)
      if (!fitsIn(u, offer, ZERO_M)) {
        if (!op.force) return false
        m.res.clear()
      }
      m.onboarded = offer
      return true
    }
    case 'reserve': {
      if (m.onboarded === null) return false
      if (new Set(op.gpus.map(g => g.index)).size !== op.gpus.length) return false
      const r = m.res.get(op.id)
      if ((r !== undefined && r.exp > m.now) || m.alloc.has(op.id)) return false
      const v: MVec = { cpu: op.cpuMilli, ram: op.ram, disk: op.disk, gpu: new Map(op.gpus.map(g => [g.index, g.vram])) }
      if (!fitsIn(v, m.onboarded, used(m))) return false
      m.res.set(op.id, { v, exp: m.now + op.ttl })
      return true
    }
    case 'commit': {
      if (m.alloc.has(op.id)) return true
      const r = m.res.get(op.id)
      if (r === undefined) return false
      m.res.delete(op.id)
      if (r.exp <= m.now) return false
      m.alloc.set(op.id, r.v)
      return true
    }
    case 'release':
      if (!m.alloc.delete(op.id)) m.res.delete(op.id)
      return true
    case 'advance':
      m.now += op.ms
      return true
    case 'sweep':
      for (const [id, r] of m.res) if (r.exp <= m.now) m.res.delete(id)
      return true
    case 'offboard': {
      if (m.onboarded === null) return false
      const live = [...m.res.values()].some(r => r.exp > m.now)
      if (!op.force && (live || m.alloc.size > 0)) return false
      m.onboarded = null
      m.res.clear()
      return true
    }
    case 'restart':
      return true
  }
}

function toModelVec (v: ResourceVector): MVec {
  return {
    cpu: Math.round(v.cpuCores * 1000),
    ram: v.ramBytes / UNIT,
    disk: v.diskBytes / UNIT,
    gpu: new Map(v.gpus.filter(g => g.vramBytes !== 0).map(g => [g.index, g.vramBytes / UNIT]))
  }
}

const flat = (v: MVec): unknown => ({ ...v, gpu: [...v.gpu].filter(([, x]) => x !== 0).sort(([a], [b]) => a - b) })

function checkInvariants (s: LedgerSnapshot, m: Model, forcedSinceClean: boolean): void {
  // Nothing lost, nothing extra: the live reservations and the allocations are the model's.
  expect(Object.fromEntries(s.reservations.map(r => [r.id, flat(toModelVec(r.resources))])))
    .toEqual(Object.fromEntries([...m.res].filter(([, r]) => r.exp > m.now).map(([id, r]) => [id, flat(r.v)])))
  expect(Object.fromEntries(s.allocations.map(a => [a.id, flat(toModelVec(a.resources))])))
    .toEqual(Object.fromEntries([...m.alloc].map(([id, v]) => [id, flat(v)])))
  // An id is counted as a reservation or as an allocation, never both.
  const ids = [...s.reservations, ...s.allocations].map(x => x.id)
  expect(new Set(ids).size).toBe(ids.length)

  // Conservation: onboarded = reserved + allocated + free − deficit, per dimension.
  const on = toModelVec(s.onboarded ?? { cpuCores: 0, ramBytes: 0, diskBytes: 0, gpus: [] })
  const parts = [s.reserved, s.allocated, s.free].map(toModelVec)
  const deficit = toModelVec(s.deficit ?? { cpuCores: 0, ramBytes: 0, diskBytes: 0, gpus: [] })
  for (const d of ['cpu', 'ram', 'disk'] as const) {
    expect(parts[0][d] + parts[1][d] + parts[2][d] - deficit[d]).toBe(on[d])
  }
  const indices = new Set([...on.gpu.keys(), ...parts.flatMap(p => [...p.gpu.keys()]), ...deficit.gpu.keys()])
  for (const i of indices) {
    const got = parts.reduce((acc, p) => acc + (p.gpu.get(i) ?? 0), 0) - (deficit.gpu.get(i) ?? 0)
    expect(got).toBe(on.gpu.get(i) ?? 0)
  }
  // Free is never negative. A deficit exists only after a forced operation, and is made of
  // allocations alone: force cancels reservations and none is granted into a short dimension.
  for (const d of ['cpu', 'ram', 'disk'] as const) expect(parts[2][d]).toBeGreaterThanOrEqual(0)
  for (const x of parts[2].gpu.values()) expect(x).toBeGreaterThanOrEqual(0)
  if (s.deficit !== null) {
    expect(forcedSinceClean).toBe(true)
    for (const d of ['cpu', 'ram', 'disk'] as const) expect(deficit[d]).toBeLessThanOrEqual(parts[1][d])
    for (const [i, x] of deficit.gpu) expect(x).toBeLessThanOrEqual(parts[1].gpu.get(i) ?? 0)
  }
}

/** On disk, expired or not, no id is stored both as a reservation and as an allocation. */
async function checkStored (db: Db): Promise<void> {
  const keys: string[] = []
  for await (const k of db.sublevel('ledger').keys()) keys.push(k)
  const ids = keys.filter(k => k !== 'onboarded').map(k => k.slice(k.indexOf('/') + 1))
  expect(new Set(ids).size).toBe(ids.length)
}

const gpuAsk = fc.uniqueArray(fc.record({ index: fc.constantFrom(0, 1, 2), vram: fc.integer({ min: 1, max: 40 * 4 }) }), { maxLength: 2, selector: g => g.index })
const id = fc.constantFrom(...IDS)
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant('onboard' as const), cpuMilli: fc.integer({ min: 1, max: 9000 }), ram: fc.integer({ min: 1, max: 70 }), disk: fc.integer({ min: 1, max: 420 }), gpus: fc.option(gpuAsk, { nil: null }), force: fc.boolean() }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('reserve' as const), id, cpuMilli: fc.integer({ min: 0, max: 4000 }), ram: fc.integer({ min: 0, max: 20 }), disk: fc.integer({ min: 0, max: 100 }), gpus: gpuAsk, ttl: fc.integer({ min: 1, max: 100 }) }), weight: 5 },
  { arbitrary: fc.record({ kind: fc.constant('commit' as const), id }), weight: 3 },
  { arbitrary: fc.record({ kind: fc.constant('release' as const), id }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 60 }) }), weight: 2 },
  { arbitrary: fc.constant({ kind: 'sweep' as const }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('offboard' as const), force: fc.boolean() }), weight: 1 },
  { arbitrary: fc.constant({ kind: 'restart' as const }), weight: 2 }
)

async function apply (rm: ResourceManager, op: Op): Promise<boolean> {
  const gpus = (gs: Array<{ index: number, vram: number }>): Array<{ index: number, vramBytes: number }> => gs.map(g => ({ index: g.index, vramBytes: g.vram * UNIT }))
  try {
    switch (op.kind) {
      case 'onboard':
        await rm.onboard({ cpuCores: op.cpuMilli / 1000, ramBytes: op.ram * UNIT, diskBytes: op.disk * UNIT, ...(op.gpus === null ? {} : { gpus: gpus(op.gpus) }) }, { force: op.force })
        return true
      case 'reserve':
        await rm.reserve(op.id, { cpuCores: op.cpuMilli / 1000, ramBytes: op.ram * UNIT, diskBytes: op.disk * UNIT, gpus: gpus(op.gpus) }, op.ttl)
        return true
      case 'commit': await rm.commit(op.id); return true
      case 'release': await rm.release(op.id); return true
      case 'sweep': await rm.sweep(); return true
      case 'offboard': await rm.offboard({ force: op.force }); return true
      case 'advance': case 'restart': return true
    }
  } catch (err) {
    // Only typed refusals are acceptable outcomes; anything else is a bug.
    if (!isDmsError(err)) throw err
    expect(['InsufficientResources', 'NotOnboarded', 'Conflict', 'NotFound', 'Expired', 'InvalidState', 'InvalidArgument']).toContain(err.name)
    return false
  }
}

describe('resource ledger properties', () => {
  it('no sequence of operations loses, double-counts or over-commits, across restarts', async () => {
    const t = await tempDb('dms-ledger-prop-')
    let run = 0
    try {
      await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), async (ops) => {
        // Each run uses its own sublevel-free db state: wipe the ledger first.
        await t.db.sublevel('ledger').clear()
        run++
        const clock = manualClock(1_000_000 + run)
        const make = (): ResourceManager => createResourceManager({ syncWrites: false }, { db: t.db, log, clock: clock.now, capacity: async () => MACHINE })
        let rm = make()
        await rm.start()
        const m: Model = { now: clock.now(), onboarded: null, res: new Map(), alloc: new Map() }
        let forced = false
        try {
          for (const op of ops) {
            if (op.kind === 'advance') clock.advance(op.ms)
            if (op.kind === 'restart') {
              await checkStored(t.db)
              const before = rm.snapshot()
              await rm.stop()
              await t.reopen()
              rm = make()
              await rm.start()
              expect(rm.snapshot()).toEqual(before)
            }
            const accepted = await apply(rm, op)
            const expected = step(m, op)
            expect({ op, accepted }).toEqual({ op, accepted: expected })
            if (accepted && (op.kind === 'onboard' || op.kind === 'offboard') && op.force) forced = true
            const s = rm.snapshot()
            if (s.deficit === null) forced = false
            checkInvariants(s, m, forced)
          }
          await checkStored(t.db)
        } finally {
          await rm.stop()
        }
      }), { numRuns: 150 })
    } finally {
      await t.cleanup()
    }
  })
})
