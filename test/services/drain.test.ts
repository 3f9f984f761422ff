import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isDmsError } from '../../src/lib/errors.js'
import { createMachineServices, type MachineServices } from '../../src/services/index.js'
import { GiB, log, manualClock, tempDb, type TempDb } from './helpers.js'

/**
 * Issue 12, item 12, through the services as the node wires them (createMachineServices): a node
 * that is stopping or stopped never turns a reservation into an allocation, and a live
 * reservation is work in flight for the drain check.
 */
describe('a stopping node and its reservations', () => {
  let t: TempDb
  let m: MachineServices
  const clock = manualClock()
  const refusal = async (p: Promise<unknown>): Promise<{ name: string, fields: Record<string, unknown> }> => {
    try { await p } catch (err) { if (isDmsError(err)) return { name: err.name, fields: err.fields }; throw err }
    throw new Error('expected a typed refusal, but it was accepted')
  }

  beforeEach(async () => {
    t = await tempDb('dms-drain-')
    m = createMachineServices(
      { dataDir: t.dir, ports: { min: 45100, max: 45199 }, gpuCommands: { nvidia: false, rocm: false }, syncWrites: false },
      { db: t.db, log, clock: clock.now })
    await m.start()
    await m.resources.onboard({ cpuCores: 1, ramBytes: GiB / 4, diskBytes: GiB / 4 })
  })
  afterEach(async () => {
    await m.stop()
    await t.cleanup()
  })

  it('a live reservation keeps the node stopping; its commit is refused (InvalidState); releasing it stops the node', async () => {
    await m.resources.reserve('r1', { cpuCores: 0.5 }, 60_000)
    // No allocation runs, but the reservation may still become one: not drained.
    expect((await m.nodeState.set('stopping')).state).toBe('stopping')
    expect(await refusal(m.nodeState.set('stopped'))).toMatchObject({ name: 'InvalidState', fields: { running: 1 } })

    expect(await refusal(m.resources.commit('r1'))).toMatchObject({ name: 'InvalidState', fields: { id: 'r1' } })
    // refused without side effect: still a reservation, nothing allocated, still stopping
    const s = m.resources.snapshot()
    expect(s.reservations.map(r => r.id)).toEqual(['r1'])
    expect(s.allocations).toEqual([])
    expect(m.nodeState.get().state).toBe('stopping')

    await m.resources.release('r1')
    expect(await m.nodeState.checkDrained()).toBe('stopped')
    expect(await refusal(m.resources.commit('r1'))).toMatchObject({ name: 'NotFound' })

    // brought back, the node takes and commits work again
    await m.nodeState.set('ready')
    await m.resources.reserve('r2', { cpuCores: 0.5 }, 60_000)
    expect((await m.resources.commit('r2')).id).toBe('r2')
  })

  it('an expiring reservation drains a stopping node, and a stopped node takes no new work', async () => {
    await m.resources.reserve('r1', { cpuCores: 0.5 }, 1_000)
    expect((await m.nodeState.set('stopping')).state).toBe('stopping')
    expect(await refusal(m.resources.commit('r1'))).toMatchObject({ name: 'InvalidState' })
    // The reservation expires; the sweep's change announcement drains the node.
    clock.advance(1_000)
    expect(await m.resources.sweep()).toEqual(['r1'])
    expect(await m.nodeState.checkDrained()).toBe('stopped')
    expect(await refusal(m.resources.commit('r1'))).toMatchObject({ name: 'NotFound' })
    expect(await refusal(m.resources.reserve('r3', { cpuCores: 0.5 }, 1_000))).toMatchObject({ name: 'InvalidState' })
  })

  it('standby keeps promises already made: a reservation from before is committed', async () => {
    await m.resources.reserve('r1', { cpuCores: 0.5 }, 60_000)
    await m.nodeState.set('standby')
    expect(await refusal(m.resources.reserve('r2', { cpuCores: 0.1 }, 60_000))).toMatchObject({ name: 'InvalidState' })
    expect((await m.resources.commit('r1')).id).toBe('r1')
    // and once stopping, the allocation holds the node in `stopping` until released
    expect((await m.nodeState.set('stopping')).state).toBe('stopping')
    await m.resources.release('r1')
    expect(await m.nodeState.checkDrained()).toBe('stopped')
  })
})
