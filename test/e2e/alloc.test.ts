import { spawn } from 'node:child_process'
import { readdir, readFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AllocationView } from '../../src/services/provider/index.js'
import type { LedgerSnapshot } from '../../src/services/resources/index.js'
import { callBehavior, openSession, type Session } from '../../src/cli/call.js'
import type { CliGlobals } from '../../src/cli/common.js'
import { BIN, PASSPHRASE, ROOT, cleanup, startDaemon, stopAllocations, type Daemon } from './harness.js'

/**
 * `dms alloc` through the CLI against a real daemon (issue 14): tasks and services on the process
 * executor, their logs, stop, the refusals, and a daemon killed with -9 that finds its workloads
 * again. The kill loop at the end checks that ledger, port table and running processes agree.
 */
/** Running, not a zombie waiting for its new parent (PID 1 of this machine) to reap it. */
const alive = async (pid: number): Promise<boolean> => {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
  return stat !== '' && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
}

/** Pids of every process whose environment names one of `ids` as its allocation. */
async function processesOf (ids: Set<string>): Promise<Map<number, string>> {
  const out = new Map<number, string>()
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue
    const env = await readFile(`/proc/${p}/environ`, 'utf8').catch(() => '')
    const m = /(?:^|\0)DMS_ALLOCATION_ID=([^\0]*)/.exec(env)
    if (m !== null && ids.has(m[1])) out.set(Number(p), m[1])
  }
  return out
}

describe('dms alloc', () => {
  let d: Daemon
  beforeAll(async () => {
    d = await startDaemon()
    expect((await d.cli(['onboard', '--cpu', '1', '--ram', '1GiB', '--disk', '16MiB', '--no-gpu'])).code).toBe(0)
  })
  afterAll(async () => {
    await stopAllocations(d)
    await cleanup([d])
  })

  it('runs a task and waits for it; its output is on `alloc logs`', async () => {
    const done = await d.cliJson(['alloc', 'run', '--wait', '--', 'sh', '-c', 'echo hello; echo oops >&2'])
    expect(done).toMatchObject({ status: 'completed', exitCode: 0 })
    expect((await d.cli(['alloc', 'logs', done.id])).stdout).toBe('hello\n')
    expect((await d.cli(['alloc', 'logs', done.id, '--stderr'])).stdout).toBe('oops\n')
    const status = await d.cliJson(['alloc', 'status', done.id])
    expect(status).toMatchObject({ id: done.id, status: 'completed', exitCode: 0, reason: expect.any(String) })
    const failed = await d.cli(['alloc', 'run', '--wait', '--', 'sh', '-c', 'exit 2'])
    expect(failed.code).toBe(1)
    expect(JSON.parse(failed.stdout)).toMatchObject({ status: 'failed', exitCode: 2 })
  })

  it('runs a service; logs --follow shows its output as it comes and ends when it is stopped', async () => {
    const started = await d.cliJson(['alloc', 'run', '--type', 'service', '--', 'sh', '-c', 'i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done'])
    expect(started).toMatchObject({ status: expect.stringMatching(/starting|running/), handle: { addr: { inbox: `alloc/${started.id}` } } })
    const follow = spawn(process.execPath, [BIN, 'alloc', 'logs', started.id, '--follow', '--data-dir', d.dataDir], { cwd: ROOT, env: { ...process.env, DMS_PASSPHRASE: PASSPHRASE } })
    let out = ''
    const threeTicks = new Promise<void>(resolve => { follow.stdout.on('data', (b: Buffer) => { out += b.toString(); if (out.includes('tick 3\n')) resolve() }) })
    const exited = new Promise<number | null>(resolve => follow.on('exit', code => { resolve(code) }))
    await threeTicks
    const listed = await d.cliJson<{ allocations: AllocationView[] }>(['alloc', 'list'])
    expect(listed.allocations.find(a => a.id === started.id)).toMatchObject({ status: 'running', type: 'service', executor: 'process' })
    expect(await d.cliJson(['alloc', 'stop', started.id])).toMatchObject({ id: started.id, status: 'stopped' })
    expect(await exited).toBe(0)
    expect(out).toMatch(/^tick 1\ntick 2\ntick 3\n/)
  })

  it('refuses bad input at once with the field and the figures, leaving nothing reserved', async () => {
    const before = await d.cliJson<LedgerSnapshot>(['actor', 'cmd', '/dms/node/resources/ledger'])
    const tooBig = await d.cli(['alloc', 'run', '--cpu', '8', '--', 'true'])
    expect(tooBig.code).toBe(1)
    expect(tooBig.stderr).toMatch(/^InsufficientResources: .*cpuCores 8.*free/)
    const unknownExecutor = await d.cli(['alloc', 'run', '--executor', 'kubernetes', '--', 'true'])
    expect(unknownExecutor.stderr).toMatch(/^InvalidArgument: unknown executor 'kubernetes'/)
    const missing = await d.cli(['alloc', 'run', '--', '/no/such/program'])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/^BadRequest: .*\/no\/such\/program/)
    const badEnv = await d.cli(['alloc', 'run', '--env', 'DMS_X=1', '--', 'true'])
    expect(badEnv.stderr).toMatch(/^BadRequest: .*env/)
    const after = await d.cliJson<LedgerSnapshot>(['actor', 'cmd', '/dms/node/resources/ledger'])
    expect(after.reservations).toEqual(before.reservations)
    expect(after.allocations).toEqual(before.allocations)
  })

  it('keeps track of a running service across kill -9 of the daemon', async () => {
    const svc = await d.cliJson(['alloc', 'run', '--type', 'service', '--', 'sleep', '600'])
    const running = await d.cliJson<AllocationView>(['alloc', 'status', svc.id])
    const pid = Number(running.workload)
    expect(await alive(pid)).toBe(true)
    await d.kill9()
    expect(await alive(pid)).toBe(true) // the workload does not die with the daemon
    d = await startDaemon({ dataDir: d.dataDir })
    expect(await d.cliJson(['alloc', 'status', svc.id])).toMatchObject({ status: 'running', workload: String(pid) })
    expect(await d.cliJson(['alloc', 'stop', svc.id])).toMatchObject({ status: 'stopped' })
    expect(await alive(pid)).toBe(false)
  })

  it('agrees with itself after a loop of kill -9 at random moments: ledger, ports and processes', async () => {
    const g: CliGlobals = { dataDir: d.dataDir, context: 'user', timeoutMs: 15_000 }
    const saved = process.env.DMS_PASSPHRASE
    process.env.DMS_PASSPHRASE = PASSPHRASE
    const seed = Number(process.env.DMS_CRASH_SEED ?? Date.now() % 1_000_000)
    let x = seed
    const rand = (): number => { x = (x * 1103515245 + 12345) % 2 ** 31; return x / 2 ** 31 }
    const ids = new Set<string>()
    try {
      let s: Session = await openSession(g)
      const call = async <T>(path: string, payload: unknown, to?: AllocationView['handle']): Promise<T> => await callBehavior<T>(g, path, payload, { session: s, to })
      /** One `alloc run` as the CLI makes it: commit, allocate, start. */
      const run = async (n: number, spec: Record<string, unknown>): Promise<void> => {
        const ensembleId = `loop-${seed}-${n}`
        const commit = await call<{ allocations: Array<{ id: string }> }>('/dms/deployment/commit', { ensembleId, allocations: [{ name: 'main', resources: { cpuCores: 0.05, ramBytes: 2 ** 24 }, ports: [{ private: 80 }] }] })
        ids.add(commit.allocations[0].id)
        const a = await call<{ allocations: Array<{ handle: AllocationView['handle'] }> }>('/dms/deployment/allocate', { ensembleId, allocations: [{ name: 'main', spec }] })
        await call('/dms/allocation/start', {}, a.allocations[0].handle)
      }
      for (let kill = 0, n = 0; kill < 3; kill++) {
        const ops: Array<Promise<unknown>> = []
        const count = 2 + Math.floor(rand() * 4)
        for (let i = 0; i < count; i++) {
          const spec = rand() < 0.5
            ? { type: 'service', command: ['sleep', '600'] }
            : { type: 'task', command: ['sleep', String((Math.floor(rand() * 5) / 10).toFixed(1))] }
          ops.push(run(n++, spec).catch(() => undefined))
        }
        // kill while some of them are anywhere in commit, allocate or start
        if (rand() < 0.5) await ops[0]
        await d.kill9()
        await Promise.all(ops)
        d = await startDaemon({ dataDir: d.dataDir })
        s = await openSession(g)
        const ctx = `seed ${seed}, kill ${kill}`
        const { allocations } = await call<{ allocations: AllocationView[] }>('/dms/node/allocations/list', {})
        const ledger = await call<LedgerSnapshot>('/dms/node/resources/ledger', {})
        const { leases } = await call<{ leases: Array<{ port: number, allocationId: string }> }>('/dms/node/ports/list', {})
        const mine = allocations.filter(a => ids.has(a.id))
        const live = new Set(mine.filter(a => a.status === 'running' || a.status === 'starting').map(a => a.id))
        const known = new Set(mine.map(a => a.id))
        // every live allocation holds its resources and ports; an ended one holds nothing
        for (const id of live) expect(ledger.allocations.map(a => a.id), ctx).toContain(id)
        for (const a of mine.filter(a => !live.has(a.id) && a.status !== 'pending')) {
          expect(ledger.allocations.map(l => l.id), ctx).not.toContain(a.id)
          expect(leases.map(l => l.allocationId), ctx).not.toContain(a.id)
        }
        // the ledger holds no allocation without a record (a commit never allocated may still hold a reservation until it expires)
        for (const l of ledger.allocations.filter(l => ids.has(l.id))) expect(known.has(l.id), ctx).toBe(true)
        // processes: exactly one per live process allocation, none for anything else
        const procs = await processesOf(ids)
        for (const [pid, id] of procs) expect(live.has(id), `${ctx}: pid ${pid} runs for ${id}`).toBe(true)
        for (const a of mine.filter(a => a.status === 'running')) expect([...procs.keys()], ctx).toContain(Number(a.workload))
      }
    } finally {
      process.env.DMS_PASSPHRASE = saved
    }
  })
})
