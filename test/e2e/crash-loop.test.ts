import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { callBehavior, openSession, type Session } from '../../src/cli/call.js'
import type { CliGlobals } from '../../src/cli/common.js'
import { isDmsError } from '../../src/lib/errors.js'
import type { LedgerSnapshot } from '../../src/services/resources/index.js'
import { cleanup, PASSPHRASE, startDaemon, type Daemon } from './harness.js'

/**
 * kill -9 the daemon at random points of a stream of reserve/commit/release invocations, restart
 * it on the same data dir, and check the ledger: every acknowledged operation is there, the one in
 * flight is there entirely or not at all, and onboarded = reserved + allocated + free. The stream
 * is signed and sent as the CLI does (src/cli/call.ts) but from this process, so a run is a few
 * hundred invocations rather than a few hundred CLI start-ups.
 */
const KILLS = 4
const MAX_OPS_BEFORE_KILL = 40
const IDS = Array.from({ length: 8 }, (_, i) => `job-${i}`)
/** Reservations outlive the test: what is checked is the stream, not expiry. */
const TTL_MS = 3_600_000

type Op = { kind: 'reserve', id: string, cpuCores: number, ramBytes: number } | { kind: 'commit' | 'release', id: string }
interface Model { reservations: Set<string>, allocations: Set<string> }

function step (m: Model, op: Op, outcome: 'ok' | string): void {
  if (outcome !== 'ok') return
  if (op.kind === 'reserve') m.reservations.add(op.id)
  if (op.kind === 'commit') { m.reservations.delete(op.id); m.allocations.add(op.id) }
  if (op.kind === 'release') { m.reservations.delete(op.id); m.allocations.delete(op.id) }
}
const clone = (m: Model): Model => ({ reservations: new Set(m.reservations), allocations: new Set(m.allocations) })
const view = (m: Model): { reservations: string[], allocations: string[] } => ({ reservations: [...m.reservations].sort(), allocations: [...m.allocations].sort() })

describe('daemon crash loop (kill -9 during a reserve/commit/release stream)', () => {
  let d: Daemon
  let g: CliGlobals
  const saved = process.env.DMS_PASSPHRASE

  beforeAll(async () => {
    process.env.DMS_PASSPHRASE = PASSPHRASE
    d = await startDaemon()
    g = { dataDir: d.dataDir, context: 'user', timeoutMs: 10_000 }
  })
  afterAll(async () => {
    await cleanup([d])
    process.env.DMS_PASSPHRASE = saved
  })

  it(`keeps a consistent ledger through ${KILLS} kills`, async () => {
    let session: Session = await openSession(g)
    const call = async <T>(path: string, payload: unknown): Promise<T> => await callBehavior<T>(g, path, payload, { session })
    await call('/dms/node/onboarding/onboard', { cpuCores: 1, ramBytes: 2 ** 30, diskBytes: 2 ** 20, gpus: [] })

    const seed = Number(process.env.DMS_CRASH_SEED ?? Date.now() % 1_000_000)
    let x = seed
    // A small LCG: the seed in a failure message replays the same stream.
    const rand = (): number => { x = (x * 1103515245 + 12345) % 2 ** 31; return x / 2 ** 31 }
    const randomOp = (): Op => {
      const id = IDS[Math.floor(rand() * IDS.length)]
      const r = rand()
      if (r < 0.5) return { kind: 'reserve', id, cpuCores: (1 + Math.floor(rand() * 4)) / 10, ramBytes: (1 + Math.floor(rand() * 4)) * 2 ** 26 }
      return { kind: r < 0.8 ? 'commit' : 'release', id }
    }
    const invoke = async (op: Op): Promise<string> => {
      try {
        if (op.kind === 'reserve') await call('/dms/node/resources/reserve', { id: op.id, resources: { cpuCores: op.cpuCores, ramBytes: op.ramBytes }, ttlMs: TTL_MS })
        else await call(`/dms/node/resources/${op.kind}`, { id: op.id })
        return 'ok'
      } catch (err) {
        if (isDmsError(err) && ['InsufficientResources', 'Conflict', 'NotFound'].includes(err.name)) return err.name
        throw err
      }
    }

    const model: Model = { reservations: new Set(), allocations: new Set() }
    for (let kill = 0; kill < KILLS; kill++) {
      const n = Math.floor(rand() * MAX_OPS_BEFORE_KILL)
      for (let i = 0; i < n; i++) {
        const op = randomOp()
        step(model, op, await invoke(op))
      }
      // The next operation is sent and the daemon killed while it may be anywhere in it.
      const inFlight = randomOp()
      const pending = invoke(inFlight).catch(() => 'lost')
      if (rand() < 0.5) await new Promise(resolve => setImmediate(resolve))
      await d.kill9()
      await pending
      d = await startDaemon({ dataDir: d.dataDir })
      session = await openSession(g)

      const s = await call<LedgerSnapshot>('/dms/node/resources/ledger', {})
      const got = { reservations: s.reservations.map(r => r.id).sort(), allocations: s.allocations.map(a => a.id).sort() }
      const applied = clone(model)
      step(applied, inFlight, 'ok')
      const ctx = `seed ${seed}, kill ${kill}, in flight ${JSON.stringify(inFlight)}`
      // Either the in-flight op did not land, or it landed whole (a refused op changes nothing).
      expect([view(model), view(applied)], ctx).toContainEqual(got)
      model.reservations = new Set(got.reservations)
      model.allocations = new Set(got.allocations)

      // Conservation: onboarded = reserved + allocated + free, nothing negative.
      const on = s.onboarded
      expect(on, ctx).not.toBeNull()
      if (on === null) return
      expect(Math.round((s.reserved.cpuCores + s.allocated.cpuCores + s.free.cpuCores) * 1000), ctx).toBe(Math.round(on.cpuCores * 1000))
      expect(s.reserved.ramBytes + s.allocated.ramBytes + s.free.ramBytes, ctx).toBe(on.ramBytes)
      expect(s.deficit, ctx).toBeNull()
    }
  })
})
