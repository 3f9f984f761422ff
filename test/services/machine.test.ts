import { cpus } from 'node:os'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isDmsError } from '../../src/lib/errors.js'
import { createMachineServices, type MachineServices } from '../../src/services/index.js'
import { GiB, log, manualClock, tempDb, type TempDb } from './helpers.js'

describe('machine services (the aggregate the node wires)', () => {
  let t: TempDb
  let m: MachineServices
  const clock = manualClock()
  const make = (): MachineServices => createMachineServices(
    { dataDir: t.dir, ports: { min: 45000, max: 45099 }, gpuCommands: { nvidia: false, rocm: false }, syncWrites: false },
    { db: t.db, log, clock: clock.now })

  beforeEach(async () => {
    t = await tempDb('dms-machine-')
    m = make()
    await m.start()
  })
  afterEach(async () => {
    await m.stop()
    await t.cleanup()
  })

  it('onboards against the real machine and refuses more than it has', async () => {
    const threads = cpus().length
    await m.resources.onboard({ cpuCores: threads, ramBytes: GiB / 4, diskBytes: GiB / 4 })
    const err = await m.resources.onboard({ cpuCores: threads + 1, ramBytes: GiB / 4, diskBytes: GiB / 4 }).catch((e: unknown) => e)
    expect(isDmsError(err, 'InsufficientResources') && err.fields).toMatchObject({ dimension: 'cpuCores', requested: threads + 1, available: threads })
  })

  it('takes no new work unless ready, and a stopping node stops when its last allocation ends', async () => {
    await m.resources.onboard({ cpuCores: 1, ramBytes: GiB / 4, diskBytes: GiB / 4 })
    await m.resources.reserve('a', { cpuCores: 0.5 }, 10_000)
    await m.resources.commit('a')
    await m.nodeState.set('standby')
    expect(await m.resources.reserve('b', { cpuCores: 0.1 }, 10_000).catch((e: unknown) => isDmsError(e) && e.name)).toBe('InvalidState')
    expect((await m.nodeState.set('stopping')).state).toBe('stopping')
    const stopped = new Promise<void>(resolve => {
      const off = m.resources.onChange(() => { off(); resolve() })
    })
    await m.resources.release('a')
    await stopped
    // The drain check runs after the change is announced: wait for it through the state queue.
    expect(await m.nodeState.checkDrained()).toBe('stopped')
  })

  it('keeps ledger, ports, state and labels across a restart', async () => {
    await m.resources.onboard({ cpuCores: 1, ramBytes: GiB / 4, diskBytes: GiB / 4 })
    await m.resources.reserve('a', { cpuCores: 0.5 }, 10_000)
    const leased = await m.ports.reserve('a', { dynamic: 2 })
    await m.nodeState.setLabels({ zone: 'eu' })
    await m.nodeState.set('standby')
    const before = { ledger: m.resources.snapshot(), ports: m.ports.list(), node: m.nodeState.get() }
    await m.stop()
    await t.reopen()
    m = make()
    await m.start()
    expect({ ledger: m.resources.snapshot(), ports: m.ports.list(), node: m.nodeState.get() }).toEqual(before)
    expect(m.ports.of('a')).toEqual(leased)
  })
})
