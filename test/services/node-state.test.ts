import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isDmsError, type DmsError } from '../../src/lib/errors.js'
import {
  createNodeStateService, NODE_STATES, parseLabel, TRANSITIONS, type NodeStateService
} from '../../src/services/node-state/index.js'
import { log, manualClock, tempDb, type TempDb } from './helpers.js'

async function caught (p: Promise<unknown> | (() => unknown)): Promise<DmsError> {
  try { if (typeof p === 'function') p(); else await p } catch (err) { if (isDmsError(err)) return err; throw err }
  throw new Error('expected a typed error')
}

describe('node state and labels', () => {
  let t: TempDb
  let running: number
  let clock: ReturnType<typeof manualClock>
  let ns: NodeStateService
  const make = (): NodeStateService => createNodeStateService({ syncWrites: false }, { db: t.db, log, clock: clock.now, running: () => running })

  beforeEach(async () => {
    t = await tempDb('dms-state-')
    running = 0
    clock = manualClock()
    ns = make()
    await ns.start()
  })
  afterEach(async () => {
    await ns.stop()
    await t.cleanup()
  })

  it('starts ready and admits work only when ready', async () => {
    expect(ns.get()).toEqual({ state: 'ready', since: clock.now(), labels: {} })
    expect(ns.refusal()).toBeNull()
    await ns.set('standby')
    expect(ns.refusal()).toBe('node is standby')
  })

  it('allows exactly the documented transitions', async () => {
    for (const from of NODE_STATES) {
      for (const to of NODE_STATES) {
        // Reach `from` through allowed steps from a fresh db.
        await ns.stop(); await t.cleanup(); t = await tempDb('dms-state-'); ns = make(); await ns.start()
        running = from === 'stopping' ? 1 : 0
        const path: Record<typeof from, Array<typeof from>> = { ready: [], standby: ['standby'], stopping: ['stopping'], stopped: ['stopping'] }
        for (const s of path[from]) await ns.set(s)
        expect(ns.get().state).toBe(from)
        running = 0
        const allowed = to === from || TRANSITIONS[from].includes(to)
        if (allowed) {
          const r = await ns.set(to)
          expect(r.previous).toBe(from)
          // Asking to stop with nothing running stops at once.
          expect(r.state).toBe(to === 'stopping' ? 'stopped' : to)
        } else {
          const e = await caught(ns.set(to))
          expect(e.name).toBe('InvalidState')
          expect(e.fields).toMatchObject({ from, to })
          expect(ns.get().state).toBe(from)
        }
      }
    }
  })

  it('stopping waits for running work, then becomes stopped through the hook', async () => {
    running = 2
    expect((await ns.set('stopping')).state).toBe('stopping')
    expect(ns.refusal()).toBe('node is stopping')
    expect((await caught(ns.set('stopped'))).fields).toMatchObject({ running: 2 })
    running = 1
    expect(await ns.checkDrained()).toBe('stopping')
    running = 0
    expect(await ns.checkDrained()).toBe('stopped')
    // A stop can be called off, and a stopped node brought back.
    expect((await ns.set('ready')).state).toBe('ready')
  })

  it('a node killed while stopping finishes stopping on restart when nothing runs', async () => {
    running = 1
    await ns.set('stopping')
    await ns.stop()
    await t.reopen()
    running = 0
    ns = make()
    await ns.start()
    expect(ns.get().state).toBe('stopped')
  })

  it('validates labels like Kubernetes and persists state and labels across restarts', async () => {
    await ns.setLabels({ zone: 'eu-west-1', 'nunet.io/gpu': 'true', tier: '' })
    await ns.setLabels({ zone: 'eu-central-1' })
    expect(await ns.removeLabels(['tier', 'absent'])).toEqual({ 'nunet.io/gpu': 'true', zone: 'eu-central-1' })
    await ns.set('standby')
    const before = ns.get()
    await ns.stop()
    await t.reopen()
    ns = make()
    await ns.start()
    expect(ns.get()).toEqual(before)

    const bads: Array<Record<string, string>> = [{ '-x': 'a' }, { 'Bad_Prefix/x': 'a' }, { x: 'has space' }, { x: 'a'.repeat(64) }, { ['k'.repeat(64)]: 'v' }, { '': 'v' }, { x: '-a' }]
    for (const bad of bads) {
      expect((await caught(ns.setLabels(bad))).name).toBe('InvalidArgument')
    }
    // All or nothing: one bad label and none is applied.
    expect((await caught(ns.setLabels({ good: 'yes', 'bad key': 'x' }))).name).toBe('InvalidArgument')
    expect(ns.get().labels).toEqual(before.labels)
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']))
    expect((await caught(ns.setLabels(many))).name).toBe('InvalidArgument')
  })

  it('parses k=v from the command line', async () => {
    expect(parseLabel('zone=eu')).toEqual(['zone', 'eu'])
    expect(parseLabel('empty=')).toEqual(['empty', ''])
    expect((await caught(() => parseLabel('novalue'))).name).toBe('InvalidArgument')
    expect((await caught(() => parseLabel('a=b=c'))).name).toBe('InvalidArgument')
  })
})
