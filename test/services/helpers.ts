import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { silentLogger } from '../../src/lib/log.js'
import type { ResourceVector } from '../../src/services/resources/index.js'
import { openDb, type Db } from '../../src/store/db.js'

export const GiB = 2 ** 30

/** A machine for ledger tests: 8 threads, 16 GiB RAM, 100 GiB free disk, two GPUs. */
export const MACHINE: ResourceVector = {
  cpuCores: 8,
  ramBytes: 16 * GiB,
  diskBytes: 100 * GiB,
  gpus: [
    { index: 0, vendor: 'NVIDIA', model: 'NVIDIA A100-SXM4-40GB', vramBytes: 40 * GiB },
    { index: 1, vendor: 'NVIDIA', model: 'NVIDIA GeForce RTX 3090', vramBytes: 24 * GiB }
  ]
}

export interface TempDb { dir: string, db: Db, reopen: () => Promise<Db>, cleanup: () => Promise<void> }

/** A real level db in a fresh temp dir; `reopen` closes and opens it again (a restart). */
export async function tempDb (prefix = 'dms-svc-'): Promise<TempDb> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  const t: TempDb = {
    dir,
    db: await openDb(join(dir, 'db')),
    async reopen () {
      await t.db.close()
      t.db = await openDb(join(dir, 'db'))
      return t.db
    },
    async cleanup () {
      if (t.db.status === 'open') await t.db.close()
      await rm(dir, { recursive: true, force: true })
    }
  }
  return t
}

/** A clock tests move by hand. */
export function manualClock (start = 1_700_000_000_000): { now: () => number, advance: (ms: number) => void, set: (t: number) => void } {
  let t = start
  return { now: () => t, advance: (ms: number) => { t += ms }, set: (v: number) => { t = v } }
}

export const log = silentLogger()
