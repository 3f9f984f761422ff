import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createNode, type Node } from '../../src/index.js'
import { newIdentity } from '../../src/identity/identity.js'
import { addRoot } from '../../src/security/index.js'
import type { FileChunk, JobView } from '../../src/services/jobs/index.js'
import type { AllocationView } from '../../src/services/provider/index.js'
import type { LedgerSnapshot } from '../../src/services/resources/index.js'

/**
 * Jobs across three real nodes on loopback (issue 13, first slice): A coordinates; B and C trust
 * A's node key as a root. Each part is a deployment of one task pinned to a node, a work queue
 * across the nodes; the reduce runs at A.
 */
const T = { timeout: 30_000 }
const RES = 'resources: { cpu: { cores: 0.1 }, ram: { size: 16MiB }, disk: { size: 1MiB } }'

describe('jobs across nodes', () => {
  let dir: string
  const nodes: Node[] = []
  let a: Node

  const run = async (job: string): Promise<string> => (await a.invoke<{ id: string }>(a.did, '/dms/node/job/new', { job }, T)).id
  /** Follows the job (long polls on its version) until `done` says so; bounded by the poll count. */
  const until = async (id: string, done: (v: JobView) => boolean): Promise<JobView> => {
    let v = await a.invoke<JobView>(a.did, '/dms/node/job/status', { id }, T)
    for (let i = 0; i < 2_000 && !done(v); i++) v = await a.invoke<JobView>(a.did, '/dms/node/job/status', { id, after: v.version }, { timeout: 10_000 })
    return v
  }
  const final = (v: JobView): boolean => ['Completed', 'Failed', 'Cancelled'].includes(v.status)
  const read = async (path: string, req: Record<string, unknown>): Promise<string> => {
    const parts: Buffer[] = []
    let offset = 0
    for (let i = 0; i < 1_000; i++) {
      const c = await a.invoke<FileChunk>(a.did, path, { ...req, offset }, T)
      parts.push(Buffer.from(c.data, 'base64'))
      offset = c.nextOffset
      if (c.eof) break
    }
    return Buffer.concat(parts).toString('utf8')
  }
  /** Nothing held and nothing running on any node. */
  const idle = async (): Promise<void> => {
    for (const n of nodes) {
      const l = await n.invoke<LedgerSnapshot>(n.did, '/dms/node/resources/ledger', {}, T)
      expect([...l.reservations, ...l.allocations]).toEqual([])
      const live = (await n.invoke<{ allocations: AllocationView[] }>(n.did, '/dms/node/allocations/list', {}, T)).allocations.filter(x => !['completed', 'failed', 'stopped'].includes(x.status))
      expect(live).toEqual([])
    }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dms-jobs-'))
    const ids = await Promise.all([newIdentity(), newIdentity(), newIdentity()])
    const config = { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, helloIntervalMs: 60_000, ports: { min: 42_400, max: 42_700 } }
    for (const [i, identity] of ids.entries()) {
      const dataDir = join(dir, `n${i}`)
      if (i > 0) await addRoot(dataDir, 'dms', ids[0].did)
      const bootstrap = i === 0 ? [] : [nodes[0].addrs()[0]]
      nodes.push(await createNode({ dataDir, identity, config: { ...config, bootstrap } }))
    }
    a = nodes[0]
    for (const n of nodes) await n.invoke(n.did, '/dms/node/onboarding/onboard', { cpuCores: 0.5, ramBytes: 256 * 2 ** 20, diskBytes: 64 * 2 ** 20, gpus: [] }, T)
    // A knows B and C as connected peers before any job is placed
    for (let i = 0; i < 200; i++) {
      const peers = (await a.invoke<{ peers: Array<{ id: string, connected: boolean }> }>(a.did, '/dms/node/peers/list', {}, T)).peers
      if (nodes.slice(1).every(n => peers.some(p => p.id === n.peerId && p.connected))) break
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  })
  afterAll(async () => {
    for (const n of nodes.reverse()) await n.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('runs 12 parts over 3 nodes and reduces their outputs in part order at the origin', async () => {
    const id = await run(`
name: sums
work:
  command: [sh, -c, 'read lo hi; s=0; i=$lo; while [ $i -lt $hi ]; do s=$((s+i)); i=$((i+1)); done; echo "$DMS_PART_INDEX/$DMS_PART_COUNT $s"']
  ${RES}
split: { range: { from: 1, to: 1201, parts: 12 } }
reduce: { command: [sh, -c, 'n=0; t=0; while read p s; do echo "$p" >> order; t=$((t+s)); n=$((n+1)); done; echo "$n $t"; cat order'] }
parallelism: 3
`)
    const v = await until(id, final)
    expect(v.status, v.reason).toBe('Completed')
    expect(v.workers).toHaveLength(3)
    expect(new Set(v.parts.map(p => p.peer)).size).toBeGreaterThan(1)
    const lines = (await read('/dms/node/job/result', { id })).trim().split('\n')
    // the sum of 1..1200, and the outputs came in part order
    expect(lines[0]).toBe(`12 ${1200 * 1201 / 2}`)
    expect(lines.slice(1)).toEqual(Array.from({ length: 12 }, (_, i) => `${i}/12`))
    // one part's own output, as recorded
    expect(await read('/dms/node/job/result', { id, part: 0 })).toBe(`0/12 ${100 * 101 / 2}\n`)
    await idle()
  })

  it('runs a part that exits non-zero again, then fails the job with that part\'s stderr', async () => {
    const id = await run(`
work:
  command: [sh, -c, 'read x; if [ "$x" = bad ]; then echo "part $DMS_PART_INDEX broke" >&2; exit 3; fi; echo "$x"']
  ${RES}
split: { inputs: [ok, bad, ok] }
retries: 1
backup: false
`)
    const v = await until(id, final)
    expect(v.status).toBe('Failed')
    expect(v.failedPart).toBe(1)
    expect(v.parts[1]).toMatchObject({ status: 'failed', runs: 2, exits: 2 })
    expect(v.stderrTail).toContain('part 1 broke')
    expect(v.reason).toContain('part 1 exited 3')
    expect(await read('/dms/node/job/logs', { id, part: 1 })).toBe('part 1 broke\n')
    await expect(a.invoke(a.did, '/dms/node/job/result', { id }, T)).rejects.toMatchObject({ name: 'InvalidState' })
    await idle()
  })

  it('records a part once when it ran twice (a backup copy finished first)', async () => {
    const marker = join(dir, 'first-run-of-part-0')
    // the first run of part 0 leaves a marker and hangs; any later run finds it and ends at once
    const id = await run(`
work:
  command: [sh, -c, 'read x; if [ "$x" = slow ] && ! [ -e "$M" ]; then : > "$M"; sleep 60; fi; echo "$x done"']
  env: { M: '${marker}' }
  ${RES}
split: { inputs: [slow, quick] }
parallelism: 2
`)
    const v = await until(id, final)
    expect(v.status, v.reason).toBe('Completed')
    expect(v.parts[0]).toMatchObject({ status: 'done', runs: 2 })
    expect(await read('/dms/node/job/result', { id })).toBe('slow done\nquick done\n')
    await idle()
  })

  it('cancel stops every part and releases everything on every node', async () => {
    const id = await run(`
work:
  command: [sh, -c, 'sleep 60']
  ${RES}
split: { range: { from: 0, to: 9, parts: 9 } }
`)
    const running = await until(id, x => x.counts.running >= 3 || final(x))
    expect(running.status).toBe('Running')
    const v = await a.invoke<JobView>(a.did, '/dms/node/job/cancel', { id }, T)
    expect(v.status).toBe('Cancelled')
    await idle()
    // idempotent
    await expect(a.invoke(a.did, '/dms/node/job/cancel', { id }, T)).resolves.toMatchObject({ status: 'Cancelled' })
  })

  it('refuses a bad job file with a typed error naming the field, and keeps serving', async () => {
    await expect(run('work: { command: [x] }\nsplit: { inputs: [a] }')).rejects.toMatchObject({ name: 'BadRequest' })
    await expect(run(`work: { command: [x], ${RES} }\nsplit: { inputs: [a], range: { from: 0, to: 2, parts: 2 } }`)).rejects.toMatchObject({ name: 'BadRequest', message: expect.stringContaining('exactly one of') })
    await expect(a.invoke(a.did, '/dms/node/job/status', { id: 'nope' }, T)).rejects.toMatchObject({ name: 'NotFound' })
  })
})
