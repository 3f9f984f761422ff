import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { silentLogger } from '../../../src/lib/log.js'
import { createAllocationRuntime, isTerminal, type AllocationRecord, type AllocationRuntime, type AllocationStatus } from '../../../src/services/allocations/index.js'
import { createProcessExecutor } from '../../../src/services/executors/process.js'
import type { Executor } from '../../../src/services/executors/types.js'
import { tempDb, type TempDb } from '../helpers.js'

/** Upper bound on any one wait in these tests. */
export const LONG = 30_000

/**
 * One node's allocation machinery on temp dirs: a level db, a process executor and the runtime.
 * `restart()` drops the runtime and its executor WITHOUT stopping their workloads (as a
 * `kill -9` of the daemon would leave them) and builds new ones over the same db and dirs.
 */
export interface Node {
  db: TempDb
  nodeId: string
  root: string
  executor: Executor
  runtime: AllocationRuntime
  /** Ids onEnded was called with, in order. */
  ended: string[]
  /** Makes onEnded throw (as a release that fails) while set. */
  failRelease: boolean
  /** Called after every onEnded attempt, with whether it succeeded. */
  onRelease?: (id: string, ok: boolean) => void
  restart: () => Promise<void>
  cleanup: () => Promise<void>
}

export async function makeNode (): Promise<Node> {
  const db = await tempDb('dms-alloc-')
  const root = await mkdtemp(join(tmpdir(), 'dms-alloc-node-'))
  const nodeId = `alloc-${randomBytes(4).toString('hex')}`
  const log = silentLogger()
  const node: Node = {
    db,
    nodeId,
    root,
    ended: [],
    failRelease: false,
    executor: undefined as unknown as Executor,
    runtime: undefined as unknown as AllocationRuntime,
    async restart () {
      await node.runtime.stop()
      await node.executor.close()
      build()
    },
    async cleanup () {
      for (const r of node.runtime.list()) {
        if (!isTerminal(r.status)) await node.runtime.stopAllocation(r.id, { graceMs: 0 }).catch(() => {})
      }
      await node.runtime.stop()
      for (const ref of await node.executor.list()) {
        await node.executor.stop(ref, 0).catch(() => {})
        await node.executor.remove(ref).catch(() => {})
      }
      await node.executor.close()
      await db.cleanup()
      await rm(root, { recursive: true, force: true })
    }
  }
  const build = (): void => {
    node.executor = createProcessExecutor({ nodeId, stateDir: join(root, 'executors', 'process') }, { log })
    node.runtime = createAllocationRuntime({ dir: join(root, 'allocations'), syncWrites: false, logCheckIntervalMs: 100 }, {
      db: db.db,
      log,
      executors: { process: node.executor },
      onEnded: (r) => {
        const ok = !node.failRelease
        // Told after this call returned or threw (a microtask later), as the runtime sees it.
        queueMicrotask(() => node.onRelease?.(r.id, ok))
        if (!ok) throw new Error('release failed')
        node.ended.push(r.id)
      }
    })
  }
  build()
  return node
}

/** Resolves with the record once it has `status` (now or later); rejects after `ms`. */
export async function untilStatus (rt: AllocationRuntime, id: string, status: AllocationStatus | ((r: AllocationRecord) => boolean), ms = LONG): Promise<AllocationRecord> {
  const ok = (r: AllocationRecord | undefined): boolean => r !== undefined && (typeof status === 'function' ? status(r) : r.status === status)
  const now = rt.get(id)
  if (ok(now)) return now as AllocationRecord
  return await new Promise<AllocationRecord>((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`allocation ${id} not ${String(status)} within ${ms} ms; it is ${rt.get(id)?.status}: ${rt.get(id)?.reason}`)) }, ms)
    const off = rt.onChange((r) => {
      if (r.id === id && ok(r)) { clearTimeout(timer); off(); resolve(r) }
    })
  })
}

/** A TCP port free right now on 127.0.0.1 (the OS picks it). */
export async function freePort (): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })
}

/** A shell loop that ends by itself (bounded), so no test leaves a workload forever. */
export const idle = (cond = 'true'): string => `i=0; while ${cond} && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done`
