import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { silentLogger } from '../../src/lib/log.js'
import { createResourceManager, subtract, sum } from '../../src/services/resources/index.js'
import { openDb } from '../../src/store/db.js'
import { applyOp, CAPACITY, prng, readRecords, type CrashOp } from './fixtures/ledger-ops.js'

/**
 * The crash loop at the service level: a child process streams reserve/commit/release/sweep on
 * a real level db (fsync on, as the daemon runs it) and is killed with SIGKILL at a random line
 * of its output; then the db is reopened and must hold exactly the state after the last
 * acknowledged operation, or after the one that was in flight (never a part of it), and a
 * ledger must load from it with every invariant intact. The same db goes through every run:
 * each restart continues from what the previous kill left.
 */
const WRITER = fileURLToPath(new URL('./fixtures/ledger-writer.ts', import.meta.url))
/** Kills per test run: enough to land in every phase of an operation, bounded for CI time. */
const RUNS = 12
const MAX_LINES_BEFORE_KILL = 160

type Records = Array<[string, unknown]>

async function runUntilKilled (dbDir: string, seed: number, killAtLine: number): Promise<{ lastAcked: Records | null, inFlight: CrashOp | null, lines: number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', WRITER, dbDir, String(seed)], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = once(child, 'exit')
  let lastAcked: Records | null = null
  let inFlight: CrashOp | null = null
  let lines = 0
  const rl = createInterface({ input: child.stdout })
  for await (const line of rl) {
    if (line === 'READY') continue
    lines++
    if (line.startsWith('B ')) inFlight = JSON.parse(line.slice(2)) as CrashOp
    if (line.startsWith('A ')) { lastAcked = (JSON.parse(line.slice(2)) as { records: Records }).records; inFlight = null }
    // Keep reading after the kill: lines the child wrote before it died are still in the pipe,
    // and one of them may announce the op that was in flight at the kill.
    if (lines === killAtLine) child.kill('SIGKILL')
  }
  rl.close()
  await exited
  return { lastAcked, inFlight, lines }
}

/** The records an op yields from `before`, computed on a scratch db by the same code path. */
async function replay (before: Records, op: CrashOp): Promise<Records> {
  const dir = await mkdtemp(join(tmpdir(), 'dms-replay-'))
  const db = await openDb(dir)
  try {
    const sub = db.sublevel<string, unknown>('ledger', { valueEncoding: 'json' })
    await db.batch(before.map(([key, value]) => ({ type: 'put' as const, sublevel: sub, key, value })))
    const m = createResourceManager({ syncWrites: false }, { db, log: silentLogger(), clock: () => op.now, capacity: async () => CAPACITY })
    await m.start()
    await applyOp(m, op)
    await m.stop()
    return await readRecords(db)
  } finally {
    await db.close()
    await rm(dir, { recursive: true, force: true })
  }
}

describe('ledger crash loop (kill -9 of a writer process)', () => {
  it(`stays consistent through ${RUNS} kills at random points`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dms-crash-'))
    const dbDir = join(dir, 'db')
    const seed = Number(process.env.DMS_CRASH_SEED ?? Date.now() % 1_000_000)
    const rand = prng(seed)
    let known: Records = []
    let sawInFlightApplied = false
    try {
      for (let run = 0; run < RUNS; run++) {
        const killAt = 1 + Math.floor(rand() * MAX_LINES_BEFORE_KILL)
        const { lastAcked, inFlight } = await runUntilKilled(dbDir, seed * 100 + run, killAt)
        const expectedIfNotApplied = lastAcked ?? known

        const db = await openDb(dbDir)
        try {
          const recovered = await readRecords(db)
          const ctx = `seed ${seed}, run ${run}, kill at line ${killAt}`
          if (JSON.stringify(recovered) !== JSON.stringify(expectedIfNotApplied)) {
            // Only the operation in flight may have landed, and then all of it.
            expect(inFlight, ctx).not.toBeNull()
            expect(recovered, ctx).toEqual(await replay(expectedIfNotApplied, inFlight as CrashOp))
            sawInFlightApplied = true
          }
          known = recovered

          // The ledger loads, and its arithmetic holds: nothing double-counted, free ≥ 0.
          const last = Math.max(0, ...recovered.map(([, v]) => (v as { createdAt?: number }).createdAt ?? 0))
          const m = createResourceManager({ syncWrites: false }, { db, log: silentLogger(), clock: () => last, capacity: async () => CAPACITY })
          await m.start()
          const s = m.snapshot()
          const ids = [...s.reservations, ...s.allocations].map(x => x.id)
          expect(new Set(ids).size, ctx).toBe(ids.length)
          expect(s.deficit, ctx).toBeNull()
          if (s.onboarded !== null) {
            expect(sum([s.reserved, s.allocated, s.free], s.onboarded.gpus), ctx).toEqual(sum([s.onboarded], s.onboarded.gpus))
            expect(subtract(s.onboarded, sum([s.reserved, s.allocated])).cpuCores, ctx).toBeGreaterThanOrEqual(0)
          }
          await m.stop()
        } finally {
          await db.close()
        }
      }
      // Not asserted (it depends on timing), but worth seeing when tuning the loop.
      if (!sawInFlightApplied) console.info(`crash loop seed ${seed}: no kill landed after an op's batch and before its ack`)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
