import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { isDmsError, type DmsError } from '../../src/lib/errors.js'
import { createResourceManager, type ResourceManager, type ResourceManagerInit } from '../../src/services/resources/index.js'
import { createPortAllocator } from '../../src/services/ports/index.js'
import { GiB, log, MACHINE, manualClock, tempDb, type TempDb } from './helpers.js'

async function caught (p: Promise<unknown> | (() => unknown)): Promise<DmsError> {
  try {
    if (typeof p === 'function') p(); else await p
  } catch (err) {
    if (isDmsError(err)) return err
    throw err
  }
  throw new Error('expected a typed error')
}

describe('resource ledger', () => {
  let t: TempDb
  let clock: ReturnType<typeof manualClock>
  let rm: ResourceManager
  /** The refusal of new work (reservations) and of promised work (commits), as the node state gives them. */
  let admission: { new: string | null, promised: string | null }

  const make = (init: ResourceManagerInit = {}): ResourceManager => createResourceManager(
    { syncWrites: false, ...init },
    { db: t.db, log, clock: clock.now, capacity: async () => MACHINE, admission: (kind) => admission[kind] })

  beforeEach(async () => {
    t = await tempDb()
    clock = manualClock()
    admission = { new: null, promised: null }
    rm = make()
    await rm.start()
  })
  afterEach(async () => {
    await rm.stop()
    await t.cleanup()
  })

  it('onboards within the machine and reports status', async () => {
    expect(rm.status()).toEqual({ onboarded: false })
    const s = await rm.onboard({ cpuCores: 2.5, ramBytes: 4 * GiB, diskBytes: 20 * GiB })
    expect(s.onboarded).toBe(true)
    expect(s.since).toBe(clock.now())
    // No `gpus` given: every GPU the machine has, whole.
    expect(s.resources).toEqual({ ...MACHINE, cpuCores: 2.5, ramBytes: 4 * GiB, diskBytes: 20 * GiB })
    expect(rm.snapshot().free).toEqual(s.resources)
  })

  it('reserves several ids as one operation: all of them, or none with the first that does not fit named', async () => {
    await rm.onboard({ cpuCores: 2, ramBytes: 4 * GiB, diskBytes: 20 * GiB, gpus: [] })
    const e = await caught(rm.reserveAll([{ id: 'a', request: { cpuCores: 1.5 } }, { id: 'b', request: { cpuCores: 1 } }], 60_000))
    expect(e).toMatchObject({ name: 'InsufficientResources' })
    expect(e.message).toContain("'b'")
    expect(rm.snapshot().reservations).toEqual([])
    const made = await rm.reserveAll([{ id: 'a', request: { cpuCores: 1 } }, { id: 'b', request: { cpuCores: 1, ramBytes: GiB } }], 60_000)
    expect(made.map(r => r.id)).toEqual(['a', 'b'])
    expect(rm.snapshot().free.cpuCores).toBe(0)
    expect((await caught(rm.reserveAll([{ id: 'c', request: {} }, { id: 'c', request: {} }], 60_000))).name).toBe('InvalidArgument')
    // what one batch wrote, a restart reads back whole
    await rm.stop()
    rm = make()
    await rm.start()
    expect(rm.snapshot().reservations.map(r => r.id)).toEqual(['a', 'b'])
  })

  it('refuses onboarding more than the machine has, naming the figures', async () => {
    const e = await caught(rm.onboard({ cpuCores: 64, ramBytes: GiB, diskBytes: GiB }))
    expect(e.name).toBe('InsufficientResources')
    expect(e.fields).toMatchObject({ dimension: 'cpuCores', requested: 64, available: 8 })
    expect(e.message).toContain('64')
    expect(e.message).toContain('8')
    const ram = await caught(rm.onboard({ cpuCores: 1, ramBytes: 17 * GiB, diskBytes: GiB }))
    expect(ram.fields).toMatchObject({ dimension: 'ramBytes', requested: 17 * GiB, available: 16 * GiB })
    const disk = await caught(rm.onboard({ cpuCores: 1, ramBytes: GiB, diskBytes: 101 * GiB }))
    expect(disk.fields).toMatchObject({ dimension: 'diskBytes' })
    const gpu = await caught(rm.onboard({ cpuCores: 1, ramBytes: GiB, diskBytes: GiB, gpus: [{ index: 7 }] }))
    expect(gpu.fields).toMatchObject({ dimension: 'gpus', gpuIndex: 7 })
    const vram = await caught(rm.onboard({ cpuCores: 1, ramBytes: GiB, diskBytes: GiB, gpus: [{ index: 1, vramBytes: 25 * GiB }] }))
    expect(vram.fields).toMatchObject({ dimension: 'gpus', gpuIndex: 1, requested: 25 * GiB, available: 24 * GiB })
    expect(rm.status().onboarded).toBe(false)
  })

  it('onboards chosen GPUs with part of their VRAM, or none', async () => {
    const s = await rm.onboard({ cpuCores: 1, ramBytes: GiB, diskBytes: GiB, gpus: [{ index: 1, vramBytes: 8 * GiB }] })
    expect(s.resources?.gpus).toEqual([{ index: 1, vendor: 'NVIDIA', model: 'NVIDIA GeForce RTX 3090', vramBytes: 8 * GiB }])
    const none = await rm.onboard({ cpuCores: 1, ramBytes: GiB, diskBytes: GiB, gpus: [] })
    expect(none.resources?.gpus).toEqual([])
  })

  it('reserves, commits and releases; free is derived', async () => {
    await rm.onboard({ cpuCores: 4, ramBytes: 8 * GiB, diskBytes: 50 * GiB })
    const r = await rm.reserve('job-1', { cpuCores: 1.5, ramBytes: 2 * GiB, gpus: [{ vramBytes: 10 * GiB }] }, 60_000)
    expect(r.resources.gpus).toEqual([{ index: 0, vendor: 'NVIDIA', model: 'NVIDIA A100-SXM4-40GB', vramBytes: 10 * GiB }])
    expect(r.expiresAt).toBe(clock.now() + 60_000)
    let s = rm.snapshot()
    expect(s.free.cpuCores).toBe(2.5)
    expect(s.free.ramBytes).toBe(6 * GiB)
    expect(s.free.gpus[0].vramBytes).toBe(30 * GiB)
    expect(s.reserved.cpuCores).toBe(1.5)

    const a = await rm.commit('job-1')
    expect(a.resources).toEqual(r.resources)
    s = rm.snapshot()
    expect(s.reservations).toEqual([])
    expect(s.allocations.map(x => x.id)).toEqual(['job-1'])
    expect(s.allocated.cpuCores).toBe(1.5)
    expect(s.free.cpuCores).toBe(2.5)
    // commit is idempotent (a retried two-phase commit must not fail or double-count).
    expect(await rm.commit('job-1')).toEqual(a)
    expect(rm.snapshot().allocated.cpuCores).toBe(1.5)

    expect(await rm.release('job-1')).toMatchObject({ released: 'allocation' })
    expect(await rm.release('job-1')).toEqual({ released: 'none' })
    expect(rm.snapshot().free).toEqual(rm.snapshot().onboarded)
  })

  it('sums fractional cores exactly', async () => {
    await rm.onboard({ cpuCores: 0.3, ramBytes: GiB, diskBytes: GiB })
    await rm.reserve('a', { cpuCores: 0.1 }, 1000)
    await rm.reserve('b', { cpuCores: 0.2 }, 1000)
    expect(rm.snapshot().free.cpuCores).toBe(0)
    expect((await caught(rm.reserve('c', { cpuCores: 0.001 }, 1000))).fields).toMatchObject({ dimension: 'cpuCores' })
  })

  it('refuses what does not fit, naming the short dimension', async () => {
    await rm.onboard({ cpuCores: 2, ramBytes: 2 * GiB, diskBytes: 2 * GiB, gpus: [{ index: 1 }] })
    expect((await caught(rm.reserve('x', { cpuCores: 3 }, 1000))).fields).toMatchObject({ dimension: 'cpuCores', requested: 3, available: 2 })
    expect((await caught(rm.reserve('x', { ramBytes: 3 * GiB }, 1000))).fields).toMatchObject({ dimension: 'ramBytes' })
    expect((await caught(rm.reserve('x', { diskBytes: 3 * GiB }, 1000))).fields).toMatchObject({ dimension: 'diskBytes' })
    expect((await caught(rm.reserve('x', { gpus: [{ index: 0 }] }, 1000))).fields).toMatchObject({ dimension: 'gpus', gpuIndex: 0 })
    expect((await caught(rm.reserve('x', { gpus: [{}, {}] }, 1000))).fields).toMatchObject({ dimension: 'gpus' })
    expect(() => rm.check({ cpuCores: 3 })).toThrow(expect.objectContaining({ name: 'InsufficientResources' }))
    expect(rm.check({ cpuCores: 2 }).cpuCores).toBe(2)
    expect(rm.snapshot().reservations).toEqual([])
  })

  it('types its refusals: NotOnboarded, Conflict, NotFound, InvalidArgument, InvalidState', async () => {
    expect((await caught(rm.reserve('a', { cpuCores: 1 }, 1000))).name).toBe('NotOnboarded')
    expect((await caught(() => rm.check({}))).name).toBe('NotOnboarded')
    await rm.onboard({ cpuCores: 4, ramBytes: GiB, diskBytes: GiB })
    await rm.reserve('a', { cpuCores: 1 }, 1000)
    expect((await caught(rm.reserve('a', { cpuCores: 1 }, 1000))).name).toBe('Conflict')
    expect((await caught(rm.commit('nope'))).name).toBe('NotFound')
    expect((await caught(rm.reserve('has space', {}, 1000))).name).toBe('InvalidArgument')
    expect((await caught(rm.reserve('b', {}, 0))).name).toBe('InvalidArgument')
    expect((await caught(rm.reserve('b', { cpuCores: -1 }, 10))).name).toBe('InvalidArgument')
    admission = { new: 'node is standby', promised: null }
    const e = await caught(rm.reserve('b', { cpuCores: 1 }, 1000))
    expect(e.name).toBe('InvalidState')
    // A promise already made is kept in standby: commit is not new work.
    expect((await rm.commit('a')).id).toBe('a')
  })

  it('expires reservations by the clock, with or without a sweep', async () => {
    await rm.onboard({ cpuCores: 2, ramBytes: GiB, diskBytes: GiB })
    await rm.reserve('a', { cpuCores: 2 }, 1000)
    expect((await caught(rm.reserve('b', { cpuCores: 1 }, 1000))).name).toBe('InsufficientResources')
    clock.advance(1000)
    // Expired the moment its time passed: free again before any sweep ran.
    expect(rm.snapshot().reservations).toEqual([])
    expect(rm.snapshot().free.cpuCores).toBe(2)
    expect((await caught(rm.commit('a'))).name).toBe('Expired')
    await rm.reserve('a', { cpuCores: 1 }, 1000)
    clock.advance(5000)
    expect(await rm.sweep()).toEqual(['a'])
    expect(await rm.sweep()).toEqual([])
  })

  it('keeps sweeping for its whole life, through a failed pass', async () => {
    await rm.stop()
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] })
    try {
      let failNext = false
      const clockThatFailsOnce = (): number => {
        if (failNext) { failNext = false; throw new Error('clock broke') }
        return clock.now()
      }
      rm = createResourceManager({ syncWrites: false, sweepIntervalMs: 100 },
        { db: t.db, log, clock: clockThatFailsOnce, capacity: async () => MACHINE })
      await rm.start()
      await rm.onboard({ cpuCores: 8, ramBytes: GiB, diskBytes: GiB })
      const passes: string[][] = []
      const swept = (): Promise<void> => new Promise(resolve => {
        const off = rm.onChange(s => { off(); passes.push(s.reservations.map(r => r.id)); resolve() })
      })
      for (let i = 0; i < 5; i++) {
        await rm.reserve(`r${i}`, { cpuCores: 1 }, 50)
        clock.advance(60)
        if (i === 2) {
          // This pass throws; the next one must still run and catch up.
          failNext = true
          await vi.advanceTimersByTimeAsync(100)
          await vi.advanceTimersByTimeAsync(0)
        }
        const done = swept()
        await vi.advanceTimersByTimeAsync(100)
        await done
        expect(rm.snapshot().reservations).toEqual([])
      }
      // Every expired reservation's record is gone from the db, not only from the view.
      const keys: string[] = []
      for await (const k of t.db.sublevel('ledger').keys()) keys.push(k)
      expect(keys).toEqual(['onboarded'])
    } finally {
      vi.useRealTimers()
    }
  })

  it('refuses shrinking below what is held unless forced; force cancels reservations only', async () => {
    await rm.onboard({ cpuCores: 4, ramBytes: 4 * GiB, diskBytes: 4 * GiB })
    await rm.reserve('res', { cpuCores: 1 }, 10_000)
    await rm.reserve('alloc', { cpuCores: 2, ramBytes: 2 * GiB }, 10_000)
    await rm.commit('alloc')
    const e = await caught(rm.onboard({ cpuCores: 2, ramBytes: 4 * GiB, diskBytes: 4 * GiB }))
    expect(e.name).toBe('InsufficientResources')
    expect(e.fields).toMatchObject({ dimension: 'cpuCores', offered: 2, inUse: 3 })
    // Growing, or shrinking to exactly what is held, is fine.
    await rm.onboard({ cpuCores: 3, ramBytes: 4 * GiB, diskBytes: 4 * GiB })
    expect(rm.snapshot().free.cpuCores).toBe(0)

    await rm.onboard({ cpuCores: 1, ramBytes: GiB, diskBytes: GiB }, { force: true })
    const s = rm.snapshot()
    expect(s.reservations).toEqual([])
    expect(s.allocations.map(a => a.id)).toEqual(['alloc'])
    expect(s.free.cpuCores).toBe(0)
    expect(s.deficit).toMatchObject({ cpuCores: 1, ramBytes: GiB })
    expect((await caught(rm.reserve('new', { cpuCores: 0.5 }, 1000))).name).toBe('InsufficientResources')
    await rm.release('alloc')
    expect(rm.snapshot().deficit).toBeNull()
  })

  it('refuses offboarding while resources are held unless forced', async () => {
    expect((await caught(rm.offboard())).name).toBe('NotOnboarded')
    await rm.onboard({ cpuCores: 4, ramBytes: 4 * GiB, diskBytes: 4 * GiB })
    await rm.reserve('res', { cpuCores: 1 }, 10_000)
    await rm.reserve('alloc', { cpuCores: 1 }, 10_000)
    await rm.commit('alloc')
    const e = await caught(rm.offboard())
    expect(e.name).toBe('InvalidState')
    expect(e.fields).toMatchObject({ reservations: ['res'], allocations: ['alloc'] })
    expect(await rm.offboard({ force: true })).toEqual({ offboarded: true, cancelledReservations: ['res'], remainingAllocations: ['alloc'] })
    const s = rm.snapshot()
    expect(s.onboarded).toBeNull()
    expect(s.deficit?.cpuCores).toBe(1)
    await rm.release('alloc')
    expect(await rm.offboard().catch((err: DmsError) => err.name)).toBe('NotOnboarded')
    await rm.onboard({ cpuCores: 1, ramBytes: GiB, diskBytes: GiB })
    expect(await rm.offboard()).toEqual({ offboarded: true, cancelledReservations: [], remainingAllocations: [] })
  })

  it('serializes concurrent reservations: exactly what fits is granted', async () => {
    await rm.onboard({ cpuCores: 5, ramBytes: GiB, diskBytes: GiB })
    const results = await Promise.allSettled(Array.from({ length: 40 }, async (_, i) => await rm.reserve(`c${i}`, { cpuCores: 0.5 }, 10_000)))
    expect(results.filter(r => r.status === 'fulfilled')).toHaveLength(10)
    for (const r of results) if (r.status === 'rejected') expect((r.reason as DmsError).name).toBe('InsufficientResources')
    expect(rm.snapshot().free.cpuCores).toBe(0)
  })

  it('survives a restart with the same ledger', async () => {
    await rm.onboard({ cpuCores: 4, ramBytes: 4 * GiB, diskBytes: 4 * GiB, gpus: [{ index: 0, vramBytes: 8 * GiB }] })
    await rm.reserve('a', { cpuCores: 1, gpus: [{ index: 0, vramBytes: GiB }] }, 10_000)
    await rm.reserve('b', { ramBytes: GiB }, 10_000)
    await rm.commit('b')
    const before = rm.snapshot()
    await rm.stop()
    await t.reopen()
    rm = make()
    await rm.start()
    expect(rm.snapshot()).toEqual(before)
  })

  it('refuses to start on a damaged ledger record rather than guess', async () => {
    await rm.stop()
    await t.db.sublevel<string, unknown>('ledger', { valueEncoding: 'json' }).put('reservation/x', { id: 'x', resources: { cpuCores: 'lots' } })
    rm = make()
    expect((await caught(rm.start())).name).toBe('InvalidState')
    rm = make()
    await t.db.sublevel<string, unknown>('ledger', { valueEncoding: 'json' }).del('reservation/x')
    await rm.start()
  })

  it('refuses mutations once stopped', async () => {
    await rm.stop()
    expect((await caught(rm.onboard({ cpuCores: 1, ramBytes: 1, diskBytes: 1 }))).name).toBe('NotRunning')
  })

  it('releases an id\'s resources and its ports in one write: both or neither', async () => {
    const ports = createPortAllocator({ syncWrites: false, range: { min: 41_000, max: 41_063 } }, { db: t.db, log, clock: clock.now })
    await ports.start()
    try {
      await rm.onboard({ cpuCores: 2, ramBytes: 4 * GiB, diskBytes: 20 * GiB })
      await rm.reserve('a1', { cpuCores: 1 }, 60_000)
      const leased = await ports.reserve('a1', { dynamic: 3 })
      // the level batches written while releasing
      const writes: Array<Array<{ type: string }>> = []
      const onWrite = (ops: Array<{ type: string }>): void => { writes.push(ops) }
      t.db.on('write', onWrite)
      // a write that fails (the db refuses it) leaves both the reservation and the leases
      const batch = t.db.batch.bind(t.db)
      t.db.batch = (async () => { throw new Error('disk full') }) as unknown as typeof t.db.batch
      await expect(rm.releaseWithPorts('a1', ports)).rejects.toThrow('disk full')
      t.db.batch = batch
      expect(rm.snapshot().reservations.map(r => r.id)).toEqual(['a1'])
      expect(ports.of('a1')).toEqual(leased)

      await expect(rm.releaseWithPorts('a1', ports)).resolves.toMatchObject({ released: 'reservation' })
      t.db.off('write', onWrite)
      expect(writes).toHaveLength(1)
      expect(writes[0]).toHaveLength(1 + leased.length)
      expect(rm.snapshot().reservations).toEqual([])
      expect(ports.of('a1')).toEqual([])
      // idempotent, and writes nothing when nothing is held
      await expect(rm.releaseWithPorts('a1', ports)).resolves.toEqual({ released: 'none' })
      expect(writes).toHaveLength(1)
    } finally {
      await ports.stop()
    }
  })
})
