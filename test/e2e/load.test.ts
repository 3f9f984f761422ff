import { describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { ROOT } from './harness.js'

/**
 * The load test's short form (scripts/load/run.ts --quick): a daemon, three flood clients, a
 * probe, a garbage writer and a rotating-key client, each its own process, for a few seconds.
 * Asserts only what cannot be a timing flake; the figures (throughput, p99 ratios, RSS) are the
 * full run's to report, not this test's to judge.
 */
interface LoadResult {
  clients: Array<{ name: string, role: string, crashed: boolean, ok: number, overloaded: number, timeouts: number, otherErrors: Record<string, number>, garbage?: { framesSent: number, replies: Record<string, number>, streamsDropped: number, reopenFailures: number } }>
  daemon: { alive: boolean, answersAfter: boolean, peakRssMb?: number }
  verdict: Record<string, boolean>
}

/** The whole run is bounded: module loading of six processes on a busy 2-core machine is slow. */
const RUN_TIMEOUT_MS = 540_000

async function runQuick (): Promise<{ code: number, result?: LoadResult, output: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/load/run.ts'), '--quick', '--json'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const timer = setTimeout(() => { child.kill('SIGTERM') }, RUN_TIMEOUT_MS)
  const code = await new Promise<number>(resolve => child.on('exit', (c) => { resolve(c ?? 1) }))
  clearTimeout(timer)
  const last = stdout.trim().split('\n').pop() ?? ''
  let result: LoadResult | undefined
  try { result = JSON.parse(last) as LoadResult } catch { result = undefined }
  return { code, result, output: `${stderr}\n${stdout}`.slice(-4_000) }
}

describe('load (short form)', () => {
  it('the daemon survives, every call is answered, garbage is refused and costs well-behaved clients nothing', async () => {
    const { code, result, output } = await runQuick()
    expect(result, output).toBeDefined()
    if (result === undefined) return
    // The daemon stayed up and still answers once the load is over.
    expect(result.daemon.alive).toBe(true)
    expect(result.daemon.answersAfter).toBe(true)
    // No client process died (a library promise rejecting unobserved would kill one).
    expect(result.clients.filter(c => c.crashed).map(c => c.name)).toEqual([])
    const callers = result.clients.filter(c => c.role !== 'garbage')
    for (const c of callers) {
      // Every call ended in a reply or a typed error: no timeout, nothing untyped.
      expect(c.timeouts, c.name).toBe(0)
      expect(Object.keys(c.otherErrors).filter(k => k.startsWith('untyped:')), c.name).toEqual([])
      expect(c.ok, c.name).toBeGreaterThan(0)
    }
    // Garbage on the actor protocol is answered where it can be (typed refusals) and its broken
    // stream dropped, while the well-behaved clients' connections were untouched.
    const garbage = result.clients.find(c => c.role === 'garbage')?.garbage
    expect(garbage?.streamsDropped ?? 0).toBeGreaterThan(0)
    expect(garbage?.replies.Unauthorized ?? 0).toBeGreaterThan(0)
    expect(garbage?.replies.UnknownBehavior ?? 0).toBeGreaterThan(0)
    for (const c of callers.filter(c => c.role === 'flood' || c.role === 'probe')) expect(c.otherErrors.Unreachable ?? 0, c.name).toBe(0)
    expect(code, output).toBe(0)
  }, RUN_TIMEOUT_MS + 30_000)
})
