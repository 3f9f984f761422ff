import { existsSync, readFileSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { AllocationStore } from '../../../src/services/allocations/store.js'
import { pidsWith, untilFileHas } from '../executors/contract.js'
import { LONG, freePort, idle, makeNode, untilStatus, type Node } from './helpers.js'

/** A tiny HTTP service (Node itself): 200 on every path, 500 while a file `sick` exists in its cwd. */
const HTTP_SERVER = `
const fs = require('fs'); const http = require('http')
try { fs.rmSync('sick') } catch {}
const port = Number(process.env.DMS_PORTS.split(',')[0])
http.createServer((q, r) => { r.statusCode = fs.existsSync('sick') ? 500 : 200; r.end('ok') })
  .listen(port, '127.0.0.1', () => console.log('listening'))
setTimeout(() => process.exit(0), 120000)
`

describe('allocation runtime', () => {
  let node: Node
  beforeEach(async () => {
    node = await makeNode()
    await node.runtime.start()
  })
  afterEach(async () => { await node.cleanup() })

  const statuses = (id: string): string[] => node.runtime.get(id)?.transitions.map(t => t.status) ?? []

  it('runs a task to completed (exit 0), releases it once, and persists every transition', async () => {
    const rt = node.runtime
    await rt.create('t1', { type: 'task', command: ['sh', '-c', 'echo hello'] })
    const running = await rt.run('t1')
    expect(running.ref?.executor).toBe('process')
    const done = await untilStatus(rt, 't1', r => r.status === 'completed' && r.released)
    expect(done).toMatchObject({ exitCode: 0, reason: 'exit 0' })
    expect(statuses('t1')).toEqual(['pending', 'starting', 'running', 'completed'])
    expect(node.ended).toEqual(['t1'])
    // What a reload finds is what the runtime holds.
    const { records } = await new AllocationStore(node.db.db).loadAll()
    expect(records.find(r => r.id === 't1')).toEqual(rt.get('t1'))
    expect((await rt.readLogs('t1', { stream: 'stdout', offset: 0, maxBytes: 100 })).data).toBe('hello\n')
    // Its workload is gone from the executor too.
    expect(await node.executor.list()).toEqual([])
  })

  it('marks a task failed with its exit code', async () => {
    await node.runtime.create('t2', { type: 'task', command: ['sh', '-c', 'exit 3'] })
    await node.runtime.run('t2')
    const r = await untilStatus(node.runtime, 't2', x => x.status === 'failed' && x.released)
    expect(r).toMatchObject({ exitCode: 3, reason: 'exit 3' })
    expect(node.ended).toEqual(['t2'])
  })

  it('refuses bad input at once with typed errors, leaving nothing behind', async () => {
    const rt = node.runtime
    await expect(rt.create('b1', { type: 'task', command: ['true'], colour: 'red' })).rejects.toMatchObject({ name: 'BadRequest', fields: { field: 'spec.colour' } })
    await expect(rt.create('b2', { type: 'task', executor: 'kubernetes', command: ['true'] })).rejects.toMatchObject({ name: 'BadRequest', fields: { field: 'spec.executor' } })
    await expect(rt.create('b3', { type: 'task', executor: 'docker', image: 'busybox' })).rejects.toMatchObject({ name: 'ExecutorUnavailable', fields: { executor: 'docker' } })
    await expect(rt.create('bad id', { type: 'task', command: ['true'] })).rejects.toMatchObject({ name: 'InvalidArgument' })
    expect(rt.list()).toEqual([])
    // A command that does not exist: refused by the executor at start, recorded failed, released.
    await rt.create('b4', { type: 'task', command: ['dms-no-such-command', '-x'] })
    await expect(rt.run('b4')).rejects.toMatchObject({ name: 'BadRequest', fields: { field: 'command', command: 'dms-no-such-command' } })
    expect(rt.get('b4')).toMatchObject({ status: 'failed', released: true })
    expect(node.ended).toEqual(['b4'])
    expect(await node.executor.list()).toEqual([])
    await expect(rt.create('b4', { type: 'task', command: ['true'] })).rejects.toMatchObject({ name: 'Conflict' })
    await expect(rt.run('nope')).rejects.toMatchObject({ name: 'NotFound' })
  })

  it("gives the workload its ports and id and nothing of the daemon's environment", async () => {
    const before = process.env.DMS_PASSPHRASE
    process.env.DMS_PASSPHRASE = 'daemon-secret-passphrase'
    process.env.DMS_API_PORT = '9999'
    try {
      const port = await freePort()
      await node.runtime.create('e1', { type: 'task', command: ['env'], env: { GREETING: 'hi' }, ports: [{ host: port, container: port }] })
      await node.runtime.run('e1')
      await untilStatus(node.runtime, 'e1', 'completed')
      const out = (await node.runtime.readLogs('e1', { stream: 'stdout', offset: 0, maxBytes: 10_000 })).data
      const env = Object.fromEntries(out.trim().split('\n').map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
      expect(env).toEqual({
        PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        GREETING: 'hi',
        DMS_ALLOCATION_ID: 'e1',
        [`DMS_PORT_${port}`]: String(port),
        DMS_PORTS: String(port)
      })
    } finally {
      if (before === undefined) delete process.env.DMS_PASSPHRASE
      else process.env.DMS_PASSPHRASE = before
      delete process.env.DMS_API_PORT
    }
  })

  it('restarts a failing service on-failure with exponential backoff, then fails it after the most restarts', async () => {
    const rt = node.runtime
    await rt.create('s1', { type: 'service', command: ['sh', '-c', 'echo up; exit 2'], restart: { policy: 'on-failure', maxRestarts: 3, windowMs: 60_000, backoff: { baseMs: 40, maxMs: 100 } } })
    await rt.run('s1')
    const r = await untilStatus(rt, 's1', x => x.status === 'failed' && x.released)
    expect(r.restarts).toBe(3)
    expect(r.exitCode).toBe(2)
    expect(r.reason).toContain('3 restarts within 60000 ms, the most allowed')
    // Backoff doubles and is capped: 40, 80, 100 (not 160).
    const waits = r.transitions.filter(t => t.status === 'starting' && t.reason.includes('restart')).map(t => Number(/in (\d+) ms$/.exec(t.reason)?.[1]))
    expect(waits).toEqual([40, 80, 100])
    expect(statuses('s1')).toEqual(['pending', 'starting', 'running', 'starting', 'running', 'starting', 'running', 'starting', 'running', 'failed'])
    // Each start came at least its backoff after the exit that caused it (timers never fire early).
    const t = r.transitions
    for (let i = 0; i < t.length - 1; i++) {
      if (t[i].status === 'starting' && t[i].reason.includes('restart')) expect(t[i + 1].at - t[i].at).toBeGreaterThanOrEqual(Number(/in (\d+) ms$/.exec(t[i].reason)?.[1]) - 2)
    }
    expect((await rt.readLogs('s1', { stream: 'stdout', offset: 0, maxBytes: 100 })).data).toBe('up\nup\nup\nup\n')
    expect(node.ended).toEqual(['s1'])
  })

  it('a service that exits 0 is completed under on-failure and restarted under always', async () => {
    const rt = node.runtime
    await rt.create('ok1', { type: 'service', command: ['true'], restart: { policy: 'on-failure' } })
    await rt.run('ok1')
    expect(await untilStatus(rt, 'ok1', 'completed')).toMatchObject({ restarts: 0, exitCode: 0 })
    await rt.create('ok2', { type: 'service', command: ['true'], restart: { policy: 'always', maxRestarts: 1, backoff: { baseMs: 10, maxMs: 10 } } })
    await rt.run('ok2')
    expect(await untilStatus(rt, 'ok2', 'failed')).toMatchObject({ restarts: 1, exitCode: 0 })
  })

  it('stops a service: stopped is persisted before the workload is signalled, then it is gone and released', async () => {
    const rt = node.runtime
    await rt.create('st', { type: 'service', command: ['sh', '-c', `trap 'echo bye; exit 0' TERM; echo ready; ${idle()}`] })
    const running = await rt.run('st')
    const logPath = join(node.root, 'allocations', 'st', 'stdout.log')
    await untilFileHas(logPath, 'ready')
    let aliveWhenStopped: boolean | undefined
    rt.onChange((r) => {
      if (r.id === 'st' && r.status === 'stopped' && aliveWhenStopped === undefined) {
        const state = readStatState(running.ref?.id)
        aliveWhenStopped = state !== undefined && state !== 'Z'
      }
    })
    const stopped = await rt.stopAllocation('st', { graceMs: 10_000 })
    expect(aliveWhenStopped).toBe(true)
    expect(stopped).toMatchObject({ status: 'stopped', exitCode: 0, released: true })
    expect(await node.executor.alive(running.ref!)).toBe(false)
    expect(await readFile(logPath, 'utf8')).toContain('bye')
    // Again: idempotent.
    expect((await rt.stopAllocation('st')).status).toBe('stopped')
    expect(node.ended).toEqual(['st'])
    await rt.removeAllocation('st')
    expect(rt.get('st')).toBeUndefined()
    expect(existsSync(join(node.root, 'allocations', 'st'))).toBe(false)
  })

  it('restarts a running service on request with a new workload', async () => {
    const rt = node.runtime
    await rt.create('rs', { type: 'service', command: ['sh', '-c', `echo ready; ${idle()}`] })
    const first = await rt.run('rs')
    const again = await rt.restartAllocation('rs', 'new config')
    expect(again.status).toBe('running')
    expect(again.ref?.id).not.toBe(first.ref?.id)
    expect(again.restarts).toBe(1)
    expect(await node.executor.alive(first.ref!)).toBe(false)
    expect((await node.executor.list()).map(r => r.id)).toEqual([again.ref?.id])
  })

  describe('health checks', () => {
    it('http: healthy on 2xx; unhealthy after `retries` failures, then restarted under its policy', async () => {
      const rt = node.runtime
      const port = await freePort()
      await rt.create('web', {
        type: 'service',
        command: [process.execPath, '-e', HTTP_SERVER],
        ports: [{ host: port, container: port }],
        healthcheck: { type: 'http', port, path: '/health', intervalMs: 100, timeoutMs: 2_000, retries: 2, startPeriodMs: LONG },
        restart: { policy: 'on-failure', backoff: { baseMs: 10, maxMs: 10 } }
      })
      const first = await rt.run('web')
      await untilStatus(rt, 'web', r => r.health?.status === 'healthy')
      await writeFile(join(node.root, 'allocations', 'web', 'work', 'sick'), '')
      const restarted = await untilStatus(rt, 'web', r => r.status === 'running' && r.restarts === 1)
      expect(restarted.ref?.id).not.toBe(first.ref?.id)
      const cause = restarted.transitions.find(t => t.status === 'starting' && t.reason.startsWith('unhealthy'))
      expect(cause?.reason).toContain('GET /health → 500 (2 checks in a row)')
      // The new one removed the file as it started: healthy again.
      await untilStatus(rt, 'web', r => r.restarts === 1 && r.health?.status === 'healthy')
    })

    it('tcp: a service nothing listens for is unhealthy and, under policy never, failed', async () => {
      const rt = node.runtime
      const port = await freePort()
      await rt.create('deaf', {
        type: 'service',
        command: ['sh', '-c', `${idle()}`],
        ports: [{ host: port, container: port }],
        healthcheck: { type: 'tcp', port, intervalMs: 50, timeoutMs: 1_000, retries: 3 },
        restart: { policy: 'never' }
      })
      await rt.run('deaf')
      const r = await untilStatus(rt, 'deaf', x => x.status === 'failed' && x.released)
      expect(r.reason).toMatch(/^unhealthy: tcp \d+: ECONNREFUSED \(3 checks in a row\)$/)
      expect(r.health).toMatchObject({ status: 'unhealthy', failures: 3 })
      expect(await node.executor.list()).toEqual([])
    })

    it('tcp: a listening service is healthy', async () => {
      const rt = node.runtime
      const port = await freePort()
      await rt.create('ear', {
        type: 'service',
        command: [process.execPath, '-e', HTTP_SERVER],
        ports: [{ host: port, container: port }],
        // Node takes a while to listen on a busy machine: failures until then do not count.
        healthcheck: { type: 'tcp', port, intervalMs: 50, timeoutMs: 1_000, retries: 3, startPeriodMs: LONG }
      })
      await rt.run('ear')
      expect((await untilStatus(rt, 'ear', r => r.health?.status === 'healthy')).status).toBe('running')
    })

    it('command: runs in the workload, checks its output, restarts it when unhealthy', async () => {
      const rt = node.runtime
      await rt.create('cmd', {
        type: 'service',
        command: ['sh', '-c', `rm -f sick; echo ready; ${idle()}`],
        env: { MOOD: 'fine' },
        healthcheck: { type: 'command', command: ['sh', '-c', 'test ! -e sick && echo "I am $MOOD"'], contains: 'I am fine', intervalMs: 50, timeoutMs: 5_000, retries: 2 },
        restart: { policy: 'always', backoff: { baseMs: 10, maxMs: 10 } }
      })
      await rt.run('cmd')
      await untilStatus(rt, 'cmd', r => r.health?.status === 'healthy')
      await writeFile(join(node.root, 'allocations', 'cmd', 'work', 'sick'), '')
      const r = await untilStatus(rt, 'cmd', x => x.status === 'running' && x.restarts === 1)
      expect(r.transitions.find(t => t.reason.startsWith('unhealthy'))?.reason).toContain('sh exited 1')
      await untilStatus(rt, 'cmd', x => x.restarts === 1 && x.health?.status === 'healthy')
    })
  })

  describe('logs', () => {
    it('reads a running workload\'s output across rotations; a long poll wakes on output, ends at its deadline or the end', async () => {
      const rt = node.runtime
      // 100-byte lines, a cap of 4 KiB, two files kept: it rotates while it runs.
      await rt.create('chatty', {
        type: 'service',
        command: ['sh', '-c', `i=0; while [ ! -e stop ] && [ $i -lt 2000 ]; do printf '%099d\\n' $i; i=$((i+1)); [ $((i % 20)) -eq 0 ] && sleep 0.05; done; echo last; ${idle()}`],
        logs: { maxBytes: 4096, keep: 2 }
      })
      await rt.run('chatty')
      const meta = join(node.root, 'allocations', 'chatty', 'stdout.log.meta.json')
      await untilFileHas(meta, '"generations":[{')
      await writeFile(join(node.root, 'allocations', 'chatty', 'work', 'stop'), '')
      const stream = 'stdout' as const
      // Read everything from 0: what rotation dropped is skipped and said so; the rest is whole lines in order.
      let offset = 0
      let text = ''
      let skipped = 0
      for (let i = 0; i < 10_000; i++) {
        const c = await rt.readLogs('chatty', { stream, offset, maxBytes: 1000 })
        text += c.data
        skipped += c.skipped ?? 0
        offset = c.nextOffset
        if (text.includes('last\n')) break
        if (c.eof && await rt.waitForLogs('chatty', { stream, offset, signal: AbortSignal.timeout(LONG) }) !== 'data') break
      }
      expect(text.endsWith('last\n')).toBe(true)
      const lines = text.slice(0, -'last\n'.length).split('\n').filter(Boolean)
      const first = Number(lines[0])
      expect(lines.map(Number)).toEqual(lines.map((_, i) => first + i))
      expect(skipped).toBe(first * 100)
      // Nothing more: the deadline answers; then the end answers.
      expect(await rt.waitForLogs('chatty', { stream, offset, signal: AbortSignal.timeout(200) })).toBe('deadline')
      const ending = rt.waitForLogs('chatty', { stream, offset, signal: AbortSignal.timeout(LONG) })
      await rt.stopAllocation('chatty', { graceMs: 1_000 })
      expect(await ending).toBe('ended')
    })
  })

  describe('recovery after the daemon went away', () => {
    it('re-adopts a running service, fails a vanished one, stops an orphan, and releases what was not', async () => {
      let rt = node.runtime
      const grace = { trap: `trap 'exit 0' TERM; echo ready; ${idle()}` }
      await rt.create('keep', { type: 'service', command: ['sh', '-c', grace.trap] })
      const keep = await rt.run('keep')
      const vanishMark = `dms-vanish-${Math.random().toString(16).slice(2)}`
      await rt.create('vanish', { type: 'service', command: ['sh', '-c', `echo ready; ${idle()}; : ${vanishMark}`] })
      const vanish = await rt.run('vanish')
      // An ended allocation whose release failed (the daemon died before it completed).
      node.failRelease = true
      const attempted = new Promise<boolean>(resolve => { node.onRelease = (id, ok) => { if (id === 'unreleased') resolve(ok) } })
      await rt.create('unreleased', { type: 'task', command: ['true'] })
      await rt.run('unreleased')
      expect(await attempted).toBe(false)
      expect(rt.get('unreleased')).toMatchObject({ status: 'completed', released: false })
      node.failRelease = false
      // A workload no record claims: started by the executor directly (as if the daemon died
      // between starting it and recording it).
      const marker = `dms-orphan-${Math.random().toString(16).slice(2)}`
      const orphanDir = join(node.root, 'orphan')
      await mkdir(orphanDir, { recursive: true })
      const orphan = await node.executor.start({ allocationId: 'ghost', command: ['sh', '-c', `echo ready; ${idle()}; : ${marker}`], env: { PATH: '/usr/bin:/bin' }, limits: { cpuCores: 0, ramBytes: 0 }, ports: [], dir: orphanDir, stdoutPath: join(orphanDir, 'out'), stderrPath: join(orphanDir, 'err') })
      await untilFileHas(join(orphanDir, 'out'), 'ready')

      // The daemon goes away; its workloads stay. One of them dies meanwhile (its wrapper records how).
      await node.restart()
      const workload = (await pidsWith(vanishMark)).filter(p => String(p) !== vanish.ref!.id)
      expect(workload).toHaveLength(1)
      process.kill(workload[0], 'SIGKILL')
      await untilGone(vanish.ref!.id)

      rt = node.runtime
      const report = await rt.start()
      expect(report.adopted).toEqual(['keep'])
      expect(report.failed).toEqual(['vanish'])
      expect(report.released.sort()).toEqual(['unreleased', 'vanish'])
      expect(report.orphans).toEqual([{ executor: 'process', allocationId: 'ghost', id: orphan.id }])
      expect(report.damaged).toEqual([])
      expect(rt.get('vanish')).toMatchObject({ status: 'failed', signal: 'SIGKILL', exitCode: null, reason: 'its workload was gone when the daemon restarted (killed by SIGKILL)' })
      expect(await pidsWith(marker)).toEqual([])
      expect(node.ended.sort()).toEqual(['unreleased', 'vanish'])

      // The adopted one is supervised by the new runtime: its end is seen, its stop works.
      expect(rt.get('keep')).toMatchObject({ status: 'running', ref: keep.ref })
      const stopped = await rt.stopAllocation('keep', { graceMs: 10_000 })
      expect(stopped).toMatchObject({ status: 'stopped', exitCode: 0 })
      // Ledger, ports and executor agree: nothing left running or kept.
      expect(await node.executor.list()).toEqual([])
      expect(node.ended.sort()).toEqual(['keep', 'unreleased', 'vanish'])
    })

    it('keeps an allocation that was never started pending, and it starts after the restart', async () => {
      await node.runtime.create('later', { type: 'task', command: ['true'] })
      await node.restart()
      const report = await node.runtime.start()
      expect(report.pending).toEqual(['later'])
      expect(report.failed).not.toContain('later')
      expect(node.runtime.get('later')).toMatchObject({ status: 'pending' })
      await node.runtime.run('later')
      await untilStatus(node.runtime, 'later', 'completed')
      expect(node.runtime.get('later')?.transitions.map(t => t.status)).toEqual(['pending', 'starting', 'running', 'completed'])
    })

    it('an adopted service that fails is restarted under its policy by the new runtime', async () => {
      await node.runtime.create('phoenix', { type: 'service', command: ['sh', '-c', `echo ready; ${idle('[ ! -e die ]')}; rm -f die; exit 1`], restart: { policy: 'on-failure', backoff: { baseMs: 10, maxMs: 10 } } })
      const first = await node.runtime.run('phoenix')
      await node.restart()
      const report = await node.runtime.start()
      expect(report.adopted).toEqual(['phoenix'])
      await writeFile(join(node.root, 'allocations', 'phoenix', 'work', 'die'), '')
      const r = await untilStatus(node.runtime, 'phoenix', x => x.status === 'running' && x.restarts === 1)
      expect(r.ref?.id).not.toBe(first.ref?.id)
      expect(r.transitions.find(t => t.status === 'starting' && t.reason.includes('restart'))?.reason).toMatch(/^exit 1; restart 1/)
    })
  })
})

function readStatState (pid: string | undefined): string | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3)
  } catch {
    return undefined
  }
}

async function untilGone (pid: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    const st = readStatState(pid)
    if (st === undefined || st === 'Z') return
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  throw new Error(`pid ${pid} still alive`)
}
