import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobView } from '../../src/services/jobs/index.js'
import type { LedgerSnapshot } from '../../src/services/resources/index.js'
import { cleanup, startDaemon, stopAllocations, tempDir, type CliResult, type Daemon } from './harness.js'

/**
 * `dms job …` through the CLI against three daemons in separate processes (issue 13, slice 1):
 * A coordinates, B and C bootstrap to A and grant A's node /dms/deployment as an operator would
 * (as test/e2e/deploy.test.ts). The README's "Jobs" section is this session.
 */
const ONBOARD = ['onboard', '--cpu', '0.5', '--ram', '256MiB', '--disk', '64MiB', '--no-gpu']

function lastJson<T> (r: CliResult): T {
  const lines = r.stdout.trimEnd().split('\n')
  return JSON.parse(lines[lines.length - 1]) as T
}

describe('dms job across three daemons', () => {
  let a: Daemon, b: Daemon, c: Daemon
  let dir: string

  beforeAll(async () => {
    dir = await tempDir('dms-job-files-')
    a = await startDaemon({ readyTimeoutMs: 120_000 })
    ;[b, c] = await Promise.all([
      startDaemon({ args: ['--bootstrap', a.info.addrs[0]], readyTimeoutMs: 120_000 }),
      startDaemon({ args: ['--bootstrap', a.info.addrs[0]], readyTimeoutMs: 120_000 })
    ])
    for (const provider of [b, c]) {
      const r = await provider.cli(['cap', 'grant', a.info.did, '--cap', '/dms/deployment', '--topic', '/nunet/deployment', '--depth', '1', '--duration', '1h', '--token-only'])
      expect(r.code, r.stderr).toBe(0)
      await a.cliJson(['cap', 'anchor', '--context', 'dms', '--provide', r.stdout.trimEnd().split('\n').pop() as string])
    }
    for (const n of [a, b, c]) expect((await n.cli(ONBOARD)).code).toBe(0)
  }, 400_000)
  afterAll(async () => {
    for (const n of [a, b, c]) await stopAllocations(n)
    await cleanup([c, b, a], [dir])
  }, 120_000)

  it('runs a job over a directory\'s files on the nodes, follows it, and gives back the reduced result and every part\'s output', async () => {
    const data = join(dir, 'numbers')
    await mkdir(data)
    // 8 files of 1..k: each part counts its lines and sums them; the reduce adds it all up
    for (let k = 1; k <= 8; k++) await writeFile(join(data, `f${k}.txt`), Array.from({ length: k * 10 }, (_, i) => `${i + 1}\n`).join(''))
    const file = join(dir, 'sum.yaml')
    await writeFile(file, `name: sum
work:
  command: [sh, -c, 's=0; n=0; while read x; do s=$((s+x)); n=$((n+1)); done; echo "$n $s"; echo "part $DMS_PART_INDEX of $DMS_PART_COUNT" >&2']
  resources: { cpu: { cores: 0.1 }, ram: { size: 16MiB }, disk: { size: 1MiB } }
split: { directory: numbers }
reduce: { command: [sh, -c, 'n=0; s=0; while read a b; do n=$((n+a)); s=$((s+b)); done; echo "$n $s"'] }
parallelism: 3
`)
    const r = await a.cli(['job', 'run', file, '--follow'], { timeoutMs: 280_000 })
    expect(r.code, r.stderr).toBe(0)
    const out = lastJson<{ id: string, status: string, result: { bytes: number, sha256: string } }>(r)
    expect(out.status).toBe('Completed')
    expect(r.stderr).toContain('Completed: 8/8 done')
    let lines = 0
    let sum = 0
    for (let k = 1; k <= 8; k++) { lines += k * 10; sum += k * 10 * (k * 10 + 1) / 2 }
    const result = await a.cli(['job', 'result', out.id])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout).toBe(`${lines} ${sum}\n`)

    const outDir = join(dir, 'out')
    expect((await a.cli(['job', 'result', out.id, '--out', outDir])).code).toBe(0)
    expect((await readdir(outDir)).sort()).toEqual(['part-00000', 'part-00001', 'part-00002', 'part-00003', 'part-00004', 'part-00005', 'part-00006', 'part-00007', 'result'])
    expect(await readFile(join(outDir, 'part-00002'), 'utf8')).toBe(`30 ${30 * 31 / 2}\n`)

    const logs = await a.cli(['job', 'logs', out.id, '5'])
    expect(logs.stdout).toBe('part 5 of 8\n')
    const status = await a.cliJson<JobView>(['job', 'status', out.id])
    expect(status.workers.sort()).toEqual([a.info.peerId, b.info.peerId, c.info.peerId].sort())
    expect(status.counts).toMatchObject({ parts: 8, done: 8 })
    for (const n of [a, b, c]) {
      const l = await n.cliJson<LedgerSnapshot>(['actor', 'cmd', '/dms/node/resources/ledger'])
      expect([...l.reservations, ...l.allocations]).toEqual([])
    }
  }, 300_000)

  it('cancel through the CLI stops the job and releases everything on every node', async () => {
    const file = join(dir, 'sleep.yaml')
    await writeFile(file, `work:
  command: [sleep, '120']
  resources: { cpu: { cores: 0.1 }, ram: { size: 16MiB }, disk: { size: 1MiB } }
split: { inputs: [a, b, c, d] }
`)
    const r = await a.cli(['job', 'run', file])
    expect(r.code, r.stderr).toBe(0)
    const { id } = lastJson<{ id: string }>(r)
    let v = await a.cliJson<JobView>(['job', 'status', id])
    for (let i = 0; i < 200 && v.counts.running < 3; i++) v = await a.cliJson<JobView>(['actor', 'cmd', '/dms/node/job/status', '--data', JSON.stringify({ id, after: v.version })])
    expect(v.counts.running).toBeGreaterThanOrEqual(3)
    const cancelled = await a.cliJson<JobView>(['job', 'cancel', id])
    expect(cancelled.status).toBe('Cancelled')
    for (const n of [a, b, c]) {
      const l = await n.cliJson<LedgerSnapshot>(['actor', 'cmd', '/dms/node/resources/ledger'])
      expect([...l.reservations, ...l.allocations]).toEqual([])
    }
  }, 300_000)
})
