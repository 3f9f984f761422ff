import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it as vitestIt } from 'vitest'
import type { Executor, WorkloadRef, WorkloadSpec } from '../../../src/services/executors/types.js'

/**
 * The executor contract, run against every executor (process, docker) as libp2p's compliance
 * suites are: what the allocation supervisor relies on, nothing more. An implementation plugs in
 * through an `ExecutorHarness`; the workloads are POSIX shell scripts that also run under
 * busybox `sh`, so one suite serves a host shell and a busybox image.
 *
 * Every wait is bounded (`LONG`); workloads bound their own loops too, so a broken executor
 * fails a test instead of leaving a process behind forever.
 */
export interface ExecutorHarness {
  /**
   * A new executor instance for `nodeId`. Called again with the same id, it stands in for the
   * daemon after a restart (same state dir, same machine); with another id, for another node.
   */
  make: (nodeId: string) => Executor | Promise<Executor>
  /** A spec running `script` with `sh -c` in the workload (process: host shell; docker: image's). */
  shellSpec: (o: ShellSpecInput) => WorkloadSpec
  /** A spec the executor must refuse at once (process: a command that does not exist; docker: an image that is not there). */
  missingSpec: (o: Omit<ShellSpecInput, 'script'>) => WorkloadSpec
  /** A working directory that exists inside the workload (process: under `dir`; docker: e.g. `/`). */
  workingDir: (dir: string) => string
  /**
   * Variables the workload sees besides the spec's, that the executor cannot keep out (the
   * shell's own `PWD`, a container's `HOSTNAME`, …). Never anything of the daemon's.
   */
  extraEnv: string[]
  /**
   * Live processes of the workload whose command line contains `marker`, as seen where the
   * workload runs. Default: the host's /proc (process, docker). A VM's processes are in its guest:
   * the vm harness asks the guest while the VM runs (a VM that ended has none left).
   */
  processesWith?: (ex: Executor, ref: WorkloadRef, marker: string) => Promise<number[]>
  /**
   * Bound on one wait, for executors whose workloads take long to come up (a VM booting under
   * emulation: ~8 s, more on a loaded machine). Default 30 s. Each test then gets 3× it.
   */
  longMs?: number
}

export interface ShellSpecInput {
  allocationId: string
  /** The allocation's directory (exists, empty): the spec's stdout/stderr files go here. */
  dir: string
  script: string
  env?: Record<string, string>
  workingDir?: string
}

/** Upper bound on any one wait in this suite (unless the harness says longMs); tests fail well before vitest's timeout. */
const DEFAULT_LONG = 30_000
/** Bounded poll period for conditions that have no event (a process gone from /proc). */
const POLL_MS = 25
/** Grace for workloads that end at once on SIGTERM. */
const GRACE_MS = 10_000
/** Grace for workloads that ignore SIGTERM: short, so the SIGKILL comes soon. */
const SHORT_GRACE_MS = 300
/** Workload loops are bounded too: 0.1 s steps, at most this many (two minutes). */
const MAX_TICKS = 1200

export const STANDARD_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

/** Resolves once `check` returns a value other than undefined, or throws after `ms`. */
export async function until<T> (what: string, check: () => Promise<T | undefined> | T | undefined, ms = DEFAULT_LONG): Promise<T> {
  const deadline = Date.now() + ms
  for (let i = 0; ; i++) {
    const v = await check()
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms (${i + 1} checks) waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, POLL_MS))
  }
}

export async function readText (path: string): Promise<string> {
  try { return await readFile(path, 'utf8') } catch { return '' }
}

/** Resolves once the file holds `text` (a workload says it is ready: its traps are set). */
export async function untilFileHas (path: string, text: string, ms = DEFAULT_LONG): Promise<string> {
  return await until(`'${text}' in ${path}`, async () => {
    const s = await readText(path)
    return s.includes(text) ? s : undefined
  }, ms)
}

/** Pids of live (not zombie) processes whose command line contains `marker`. */
export async function pidsWith (marker: string): Promise<number[]> {
  const out: number[] = []
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const cmd = (await readFile(`/proc/${name}/cmdline`, 'utf8')).replaceAll('\0', ' ')
      if (!cmd.includes(marker)) continue
      const stat = await readFile(`/proc/${name}/stat`, 'utf8')
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
      if (state !== 'Z' && state !== 'X') out.push(Number(name))
    } catch { /* the process ended while we looked */ }
  }
  return out
}

/** A shell loop that ends by itself after MAX_TICKS steps: no workload outlives a broken test. */
const idle = (cond = 'true'): string => `i=0; while ${cond} && [ $i -lt ${MAX_TICKS} ]; do sleep 0.1; i=$((i+1)); done`

export function executorContract (name: string, harness: ExecutorHarness): void {
  const LONG = harness.longMs ?? DEFAULT_LONG
  const timeout = harness.longMs === undefined ? undefined : 3 * LONG
  const processesWith = harness.processesWith ?? (async (_ex: Executor, _ref: WorkloadRef, marker: string) => await pidsWith(marker))
  const it = (title: string, fn: () => Promise<void>, ms?: number): void => { vitestIt(title, fn, ms ?? timeout) }
  describe(`executor contract: ${name}`, () => {
    let root: string
    let nodeId: string
    let ex: Executor
    /** Everything started, so that afterEach leaves nothing running whatever a test did. */
    let started: Array<{ ex: Executor, ref: WorkloadRef }>
    let seq = 0

    beforeAll(async () => {
      root = await mkdtemp(join(tmpdir(), `dms-contract-${name}-`))
    })
    afterAll(async () => {
      await rm(root, { recursive: true, force: true })
    })

    async function fresh (): Promise<void> {
      nodeId = `contract-${name}-${randomBytes(4).toString('hex')}`
      ex = await harness.make(nodeId)
      started = []
    }

    afterEach(async () => {
      for (const { ex: e, ref } of started) {
        await e.stop(ref, 0).catch(() => {})
        await e.remove(ref).catch(() => {})
      }
      await ex.close()
    })

    async function newDir (): Promise<{ allocationId: string, dir: string }> {
      const allocationId = `alloc-${++seq}-${randomBytes(3).toString('hex')}`
      const dir = await mkdtemp(join(root, `${allocationId}-`))
      return { allocationId, dir }
    }

    async function run (script: string, opts: { env?: Record<string, string>, workingDir?: string, on?: Executor } = {}): Promise<{ ref: WorkloadRef, spec: WorkloadSpec }> {
      const spec = harness.shellSpec({ ...(await newDir()), script, env: opts.env ?? { PATH: STANDARD_PATH }, workingDir: opts.workingDir })
      const on = opts.on ?? ex
      const ref = await on.start(spec)
      started.push({ ex: on, ref })
      return { ref, spec }
    }

    async function waitFor (ref: WorkloadRef, on: Executor = ex) {
      return await on.wait(ref, { signal: AbortSignal.timeout(LONG) })
    }

    it('starts a workload and reports exit code 0', async () => {
      await fresh()
      const { ref } = await run('exit 0')
      expect(ref.executor).toBe(name)
      expect(ref.allocationId).toBeTypeOf('string')
      expect(ref.id.length).toBeGreaterThan(0)
      expect(ref.startTime.length).toBeGreaterThan(0)
      expect(ref.limits.length).toBeGreaterThan(0)
      const info = await waitFor(ref)
      expect(info).toMatchObject({ exitCode: 0, stopped: false })
      expect(info.reason).toBeTypeOf('string')
    })

    it('waits for workloads that end at once, every time', async () => {
      await fresh()
      // Started back to back: a workload may be gone before start() returns, and its end must still be seen.
      // Several at once keep the event loop busy between the spawn and start()'s return (8 are
      // enough for a process executor that looked too late to fail every time).
      const codes = Array.from({ length: 8 }, (_, i) => i)
      const refs = await Promise.all(codes.map(async i => (await run(`exit ${i}`)).ref))
      const infos = await Promise.all(refs.map(async r => await waitFor(r)))
      expect(infos.map(i => i.exitCode)).toEqual(codes)
    }, 4 * LONG)

    it('reports a non-zero exit code', async () => {
      await fresh()
      const { ref } = await run('exit 3')
      expect(await waitFor(ref)).toMatchObject({ exitCode: 3, signal: null, stopped: false })
    })

    it('appends stdout and stderr to their files', async () => {
      await fresh()
      const d = await newDir()
      const spec = harness.shellSpec({ ...d, script: 'echo out-line; echo err-line >&2; echo out-two', env: { PATH: STANDARD_PATH } })
      await writeFile(spec.stdoutPath, 'earlier\n')
      const ref = await ex.start(spec)
      started.push({ ex, ref })
      await waitFor(ref)
      expect(await readText(spec.stdoutPath)).toBe('earlier\nout-line\nout-two\n')
      expect(await readText(spec.stderrPath)).toBe('err-line\n')
    })

    it("gives the workload exactly the spec's environment, nothing of the daemon's", async () => {
      await fresh()
      const secret = `never-in-a-workload-${randomBytes(4).toString('hex')}`
      const before = process.env.DMS_PASSPHRASE
      process.env.DMS_PASSPHRASE = secret
      try {
        const env = { PATH: STANDARD_PATH, FOO: 'bar baz', DMS_ALLOCATION_ID: 'given-by-spec' }
        const { ref, spec } = await run('env', { env })
        await waitFor(ref)
        const out = await readText(spec.stdoutPath)
        expect(out).not.toContain(secret)
        const seen = new Map(out.split('\n').filter(l => l.includes('=')).map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
        for (const [k, v] of Object.entries(env)) expect(seen.get(k)).toBe(v)
        const allowed = new Set([...Object.keys(env), ...harness.extraEnv])
        expect([...seen.keys()].filter(k => !allowed.has(k))).toEqual([])
      } finally {
        if (before === undefined) delete process.env.DMS_PASSPHRASE
        else process.env.DMS_PASSPHRASE = before
      }
    })

    it('runs in the working directory of the spec', async () => {
      await fresh()
      const d = await newDir()
      const workingDir = harness.workingDir(d.dir)
      const spec = harness.shellSpec({ ...d, script: 'pwd', env: { PATH: STANDARD_PATH }, workingDir })
      const ref = await ex.start(spec)
      started.push({ ex, ref })
      await waitFor(ref)
      expect((await readText(spec.stdoutPath)).trim()).toBe(workingDir)
    })

    it('stop sends SIGTERM first: a workload that handles it ends its own way within the grace', async () => {
      await fresh()
      const { ref, spec } = await run(`trap 'echo got-term; exit 7' TERM; echo ready; ${idle()}`)
      await untilFileHas(spec.stdoutPath, 'ready', LONG)
      const waited = waitFor(ref)
      await ex.stop(ref, GRACE_MS)
      const info = await waited
      expect(info).toMatchObject({ exitCode: 7, stopped: true })
      expect(await readText(spec.stdoutPath)).toContain('got-term')
      expect(await ex.alive(ref)).toBe(false)
    })

    it('stop sends SIGKILL after the grace to a workload that ignores SIGTERM', async () => {
      await fresh()
      const { ref, spec } = await run(`trap '' TERM; echo ready; ${idle()}`)
      await untilFileHas(spec.stdoutPath, 'ready', LONG)
      await ex.stop(ref, SHORT_GRACE_MS)
      const info = await waitFor(ref)
      expect(info.stopped).toBe(true)
      // Killed: a signal, or a container's 128 + 9.
      expect(info.signal === 'SIGKILL' || info.exitCode === 137).toBe(true)
      expect(await ex.alive(ref)).toBe(false)
    })

    it('stop ends the children of the workload too', async () => {
      await fresh()
      const marker = `dms-child-${randomBytes(4).toString('hex')}`
      const { ref, spec } = await run(`sh -c "sleep 1000; : ${marker}" & echo ready; wait`)
      await untilFileHas(spec.stdoutPath, 'ready', LONG)
      // The child exists, else this test proves nothing.
      await until('the child to show', async () => (await processesWith(ex, ref, marker)).length > 0 ? true : undefined, LONG)
      await ex.stop(ref, GRACE_MS)
      expect(await processesWith(ex, ref, marker)).toEqual([])
      expect((await waitFor(ref)).stopped).toBe(true)
    })

    it('nothing the workload started outlives it when it ends by itself', async () => {
      await fresh()
      const marker = `dms-left-${randomBytes(4).toString('hex')}`
      // The child says it runs by a file in the working dir; the workload then exits, leaving it.
      const { ref, spec } = await run(`sh -c "touch child-up; sleep 1000; : ${marker}" & ${idle('[ ! -e child-up ]')}; echo ready; exit 0`)
      const info = await waitFor(ref)
      expect(info).toMatchObject({ exitCode: 0, stopped: false })
      expect(await readText(spec.stdoutPath)).toContain('ready')
      // The child goes with it (a container's processes end with its first one), without a stop.
      await until('the left-over child to end', async () => (await processesWith(ex, ref, marker)).length === 0 ? true : undefined, LONG)
      // And a stop afterwards, as the supervisor does after every end, finds nothing to do.
      await ex.stop(ref, GRACE_MS)
    })

    it('stop is idempotent: twice at once, and after the end', async () => {
      await fresh()
      const { ref, spec } = await run(`echo ready; ${idle()}`)
      await untilFileHas(spec.stdoutPath, 'ready', LONG)
      await Promise.all([ex.stop(ref, GRACE_MS), ex.stop(ref, GRACE_MS)])
      await ex.stop(ref, GRACE_MS)
      expect((await waitFor(ref)).stopped).toBe(true)
      // wait again on an ended workload answers too
      expect((await waitFor(ref)).stopped).toBe(true)
    })

    it("exec runs a command in the workload's environment and directory", async () => {
      await fresh()
      const d = await newDir()
      const workingDir = harness.workingDir(d.dir)
      const spec = harness.shellSpec({ ...d, script: `echo ready; ${idle()}`, env: { PATH: STANDARD_PATH, FOO: 'from-spec' }, workingDir })
      const ref = await ex.start(spec)
      started.push({ ex, ref })
      await untilFileHas(spec.stdoutPath, 'ready', LONG)
      const ok = await ex.exec(ref, ['sh', '-c', 'echo "$FOO"; pwd; echo oops >&2'], { timeoutMs: LONG })
      expect(ok).toEqual({ exitCode: 0, stdout: `from-spec\n${workingDir}\n`, stderr: 'oops\n' })
      const bad = await ex.exec(ref, ['sh', '-c', 'exit 3'], { timeoutMs: LONG })
      expect(bad.exitCode).toBe(3)
    })

    it('alive is true while it runs, false after, and false for a ref with another start time', async () => {
      await fresh()
      const { ref, spec } = await run(`echo ready; ${idle()}`)
      await untilFileHas(spec.stdoutPath, 'ready', LONG)
      expect(await ex.alive(ref)).toBe(true)
      // A recycled pid (or a restarted container) is not the workload.
      expect(await ex.alive({ ...ref, startTime: '1' })).toBe(false)
      await ex.stop(ref, GRACE_MS)
      expect(await ex.alive(ref)).toBe(false)
    })

    it('stats answers for a running workload', async () => {
      await fresh()
      const { ref, spec } = await run(`echo ready; ${idle()}`)
      await untilFileHas(spec.stdoutPath, 'ready', LONG)
      const s = await ex.stats(ref)
      expect(s.cpuSeconds !== undefined || s.memoryBytes !== undefined).toBe(true)
      if (s.cpuSeconds !== undefined) expect(s.cpuSeconds).toBeGreaterThanOrEqual(0)
      if (s.memoryBytes !== undefined) expect(s.memoryBytes).toBeGreaterThan(0)
    })

    it('lists the workloads of its node only, until removed', async () => {
      await fresh()
      const running = await run(`echo ready; ${idle()}`)
      const ended = await run('exit 0')
      await waitFor(ended.ref)
      await untilFileHas(running.spec.stdoutPath, 'ready', LONG)
      const ids = async (e: Executor) => (await e.list()).map(r => r.allocationId)
      expect(await ids(ex)).toEqual(expect.arrayContaining([running.ref.allocationId, ended.ref.allocationId]))
      const listed = (await ex.list()).find(r => r.allocationId === running.ref.allocationId)
      expect(listed).toMatchObject({ executor: name, id: running.ref.id, startTime: running.ref.startTime })

      const other = await harness.make(`${nodeId}-other`)
      try {
        const theirs = await ids(other)
        expect(theirs).not.toContain(running.ref.allocationId)
        expect(theirs).not.toContain(ended.ref.allocationId)
      } finally {
        await other.close()
      }

      await ex.remove(ended.ref)
      await ex.remove(ended.ref)
      expect(await ids(ex)).not.toContain(ended.ref.allocationId)
      await ex.stop(running.ref, GRACE_MS)
      await ex.remove(running.ref)
      expect(await ids(ex)).not.toContain(running.ref.allocationId)
    })

    it('a new instance (the daemon restarted) finds, re-adopts and waits for a running workload, exit code included', async () => {
      await fresh()
      const { ref, spec } = await run(`echo ready; ${idle('[ ! -e go ]')}; exit 4`)
      await untilFileHas(spec.stdoutPath, 'ready', LONG)
      await ex.close()
      const again = await harness.make(nodeId)
      try {
        expect(await again.alive(ref)).toBe(true)
        expect((await again.list()).map(r => r.id)).toContain(ref.id)
        const waited = waitFor(ref, again)
        // Observed at once: if a step below fails, close() in finally rejects this wait, and the
        // report must name that step's error, not an unhandled rejection.
        waited.catch(() => {})
        // The workload ends on its own (exit 4) once told to: the new instance learns the code.
        const touched = await again.exec(ref, ['touch', 'go'], { timeoutMs: LONG })
        expect(touched.exitCode).toBe(0)
        expect(await waited).toMatchObject({ exitCode: 4, stopped: false })
        expect(await again.alive(ref)).toBe(false)
        await again.remove(ref)
        expect((await again.list()).map(r => r.allocationId)).not.toContain(ref.allocationId)
      } finally {
        await again.close()
      }
    })

    it('a new instance can stop a workload the old one started', async () => {
      await fresh()
      const { ref, spec } = await run(`trap 'exit 9' TERM; echo ready; ${idle()}`)
      await untilFileHas(spec.stdoutPath, 'ready', LONG)
      await ex.close()
      const again = await harness.make(nodeId)
      try {
        const waited = waitFor(ref, again)
        waited.catch(() => {}) // observed: a failed stop is the error to report, not close()'s rejection of this wait
        await again.stop(ref, GRACE_MS)
        expect(await waited).toMatchObject({ stopped: true })
        expect(await again.alive(ref)).toBe(false)
        await again.remove(ref)
      } finally {
        await again.close()
      }
    })

    it('an aborted wait rejects and leaves the workload running', async () => {
      await fresh()
      const { ref, spec } = await run(`echo ready; ${idle()}`)
      await untilFileHas(spec.stdoutPath, 'ready', LONG)
      const ac = new AbortController()
      const waited = ex.wait(ref, { signal: ac.signal })
      ac.abort(new Error('caller gave up'))
      await expect(waited).rejects.toThrow()
      expect(await ex.alive(ref)).toBe(true)
    })

    it('refuses a spec it cannot run with BadRequest at once, leaving nothing behind', async () => {
      await fresh()
      const d = await newDir()
      const spec = harness.missingSpec({ ...d, env: { PATH: STANDARD_PATH } })
      const err = await ex.start(spec).then(() => undefined, (e: unknown) => e)
      expect(err).toMatchObject({ name: 'BadRequest' })
      expect((await ex.list()).map(r => r.allocationId)).not.toContain(d.allocationId)
    })
  })
}
