import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { silentLogger } from '../../../src/lib/log.js'
import { detectCgroups, removeParentsIfEmpty } from '../../../src/services/executors/process/cgroups.js'
import { createProcessExecutor } from '../../../src/services/executors/process.js'
import type { Executor, WorkloadLimits, WorkloadRef, WorkloadSpec } from '../../../src/services/executors/types.js'
import { STANDARD_PATH, executorContract, readText, until, untilFileHas, type ShellSpecInput } from './contract.js'

const stateRoot = mkdtempSync(join(tmpdir(), 'dms-process-state-'))
afterAll(() => { rmSync(stateRoot, { recursive: true, force: true }) })

function spec (o: ShellSpecInput, command: string[]): WorkloadSpec {
  return {
    allocationId: o.allocationId,
    command,
    env: o.env ?? {},
    workingDir: o.workingDir,
    limits: { cpuCores: 0.5, ramBytes: 256 * 2 ** 20 },
    ports: [],
    dir: o.dir,
    stdoutPath: join(o.dir, 'stdout.log'),
    stderrPath: join(o.dir, 'stderr.log')
  }
}

executorContract('process', {
  make: (nodeId) => createProcessExecutor({ nodeId, stateDir: join(stateRoot, nodeId) }, { log: silentLogger() }),
  shellSpec: (o) => spec(o, ['sh', '-c', o.script]),
  missingSpec: (o) => spec({ ...o, script: '' }, ['dms-no-such-command-anywhere', '--flag']),
  workingDir: (dir) => join(dir, 'cwd'),
  // dash exports the working directory it starts in.
  extraEnv: ['PWD']
})

describe('process executor on this machine', () => {
  const log = silentLogger()
  let root: string
  const cleanups: Array<() => Promise<void>> = []
  beforeAll(async () => { root = await mkdtemp(join(tmpdir(), 'dms-process-')) })
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c().catch(() => {}) })
  afterAll(async () => { await rm(root, { recursive: true, force: true }) })

  let n = 0
  async function setup (init: { cgroupRoot?: false } = {}): Promise<{ ex: Executor, nodeId: string, stateDir: string, mkSpec: (script: string, limits?: WorkloadLimits) => Promise<WorkloadSpec> }> {
    const nodeId = `proc-${++n}-${randomBytes(3).toString('hex')}`
    const stateDir = join(root, nodeId)
    const ex = createProcessExecutor({ nodeId, stateDir, ...init }, { log })
    cleanups.push(async () => {
      for (const r of await ex.list()) { await ex.stop(r, 0); await ex.remove(r) }
      await ex.close()
    })
    const mkSpec = async (script: string, limits: WorkloadLimits = { cpuCores: 0, ramBytes: 0 }): Promise<WorkloadSpec> => {
      const dir = await mkdtemp(join(root, 'alloc-'))
      return { allocationId: `a${++n}`, command: ['sh', '-c', script], env: { PATH: STANDARD_PATH }, limits, ports: [], dir, stdoutPath: join(dir, 'out'), stderrPath: join(dir, 'err') }
    }
    return { ex, nodeId, stateDir, mkSpec }
  }

  it('says which limits apply: a cgroup where one can be made, else rlimit, else none', async () => {
    const { ex, mkSpec } = await setup()
    const { ex: noCg, mkSpec: mkNoCg } = await setup({ cgroupRoot: false })
    const kind = await cgroupKind()
    const a = await ex.start(await mkSpec('exit 0', { cpuCores: 0.5, ramBytes: 64 * MiB }))
    expect(a.limits).toBe(kind ?? 'rlimit')
    const spec = await mkNoCg('ulimit -v', { cpuCores: 0.5, ramBytes: 64 * MiB })
    const b = await noCg.start(spec)
    expect(b.limits).toBe('rlimit')
    await noCg.wait(b)
    expect((await readText(spec.stdoutPath)).trim()).toBe(String(64 * 1024))
    const c = await noCg.start(await mkNoCg('exit 0'))
    expect(c.limits).toBe('none')
    const probe = await ex.probe()
    expect(probe.available).toBe(true)
  })

  describe.skipIf(cgroupV1Unavailable())('with cgroup v1 (this machine)', () => {
    it('puts the workload in its own cpu and memory groups with the limits written, and removes them', async () => {
      const { ex, mkSpec } = await setup()
      const spec = await mkSpec('echo ready; i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done', { cpuCores: 0.25, ramBytes: 48 * MiB })
      const ref = await ex.start(spec)
      await untilFileHas(spec.stdoutPath, 'ready')
      const cpuDir = await groupDirOf('cpu', Number(ref.id))
      const memDir = await groupDirOf('memory', Number(ref.id))
      expect(cpuDir).toContain(`/dms/`)
      const period = Number(await readFile(join(cpuDir, 'cpu.cfs_period_us'), 'utf8'))
      expect(Number(await readFile(join(cpuDir, 'cpu.cfs_quota_us'), 'utf8'))).toBe(Math.round(0.25 * period))
      expect(Number(await readFile(join(memDir, 'memory.limit_in_bytes'), 'utf8'))).toBe(48 * MiB)
      const stats = await ex.stats(ref)
      expect(stats.memoryBytes).toBeGreaterThan(0)
      await ex.stop(ref, 5_000)
      await ex.remove(ref)
      expect(existsSync(cpuDir)).toBe(false)
      expect(existsSync(memDir)).toBe(false)
      // The node's parent stays while the executor runs (the next start needs it), and goes with close().
      expect(existsSync(dirname(cpuDir))).toBe(true)
      await ex.close()
      expect(existsSync(dirname(cpuDir))).toBe(false)
    })

    it('enforces the memory limit: a workload that outgrows it is killed, the same one unlimited is not', async () => {
      const { ex, mkSpec } = await setup()
      // dash keeps a command substitution's output in memory: 24 MiB of it.
      const hog = `x=$(head -c ${24 * MiB} /dev/zero | tr "\\0" a); echo \${#x}`
      const limited = await ex.start(await mkSpec(hog, { cpuCores: 0, ramBytes: 8 * MiB }))
      const info = await ex.wait(limited)
      expect(info).toMatchObject({ exitCode: null, signal: 'SIGKILL', stopped: false })
      const free = await mkSpec(hog)
      const unlimited = await ex.start(free)
      expect(await ex.wait(unlimited)).toMatchObject({ exitCode: 0 })
      expect((await readText(free.stdoutPath)).trim()).toBe(String(24 * MiB))
    })

    it('enforces the CPU quota: a busy workload is throttled', async () => {
      const { ex, mkSpec } = await setup()
      const spec = await mkSpec('echo ready; i=0; while [ $i -lt 100000000 ]; do i=$((i+1)); done', { cpuCores: 0.05, ramBytes: 0 })
      const ref = await ex.start(spec)
      await untilFileHas(spec.stdoutPath, 'ready')
      const cpuDir = await groupDirOf('cpu', Number(ref.id))
      await until('the group to be throttled', async () => {
        const m = /^nr_throttled (\d+)$/m.exec(await readFile(join(cpuDir, 'cpu.stat'), 'utf8'))
        return m !== null && Number(m[1]) > 0 ? true : undefined
      })
      await ex.stop(ref, 1_000)
    })

    it('list finds a group no entry claims, and remove deletes it', async () => {
      const { ex, mkSpec, nodeId } = await setup()
      // A group made, as by a daemon killed between creating it and writing anything else.
      const spec = await mkSpec('echo ready; i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done', { cpuCores: 0.5, ramBytes: 0 })
      const ref = await ex.start(spec)
      // Joined once it speaks: the wrapper joins its groups before the workload runs.
      await untilFileHas(spec.stdoutPath, 'ready')
      const cpuDir = await groupDirOf('cpu', Number(ref.id))
      expect(cpuDir).toContain('/dms/')
      const strayDir = join(dirname(cpuDir), 'stray%2Ealloc.0123456789ab')
      await mkdir(strayDir)
      const stray = (await ex.list()).find(r => r.allocationId === 'stray.alloc')
      expect(stray).toMatchObject({ executor: 'process', id: '', startTime: '' })
      expect(await ex.alive(stray!)).toBe(false)
      await ex.stop(stray!, 0)
      await ex.remove(stray!)
      expect(existsSync(strayDir)).toBe(false)
      expect(dirname(cpuDir)).toContain(encodeURIComponent(nodeId))
    })
  })

  it('list finds a running wrapper whose registry entry is lost, and stop ends it', async () => {
    const { ex, mkSpec, stateDir } = await setup()
    const spec = await mkSpec('echo ready; i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done')
    const ref = await ex.start(spec)
    await untilFileHas(spec.stdoutPath, 'ready')
    for (const f of await readdir(stateDir)) if (f.endsWith('.json')) await rm(join(stateDir, f))
    const found = (await ex.list()).find(r => r.id === ref.id)
    expect(found).toMatchObject({ allocationId: spec.allocationId, startTime: ref.startTime })
    await ex.stop(found!, 2_000)
    expect(await ex.alive(ref)).toBe(false)
  })

  it('a workload survives the kill -9 of the daemon that started it, and the next one learns its exit code', async () => {
    const { nodeId, stateDir, mkSpec } = await setup()
    const dir = dirname((await mkSpec('')).stdoutPath)
    const script = 'echo ready; i=0; while [ ! -e go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; echo done; exit 6'
    const daemon = spawn(process.execPath, ['--import', 'tsx', FIXTURE, nodeId, stateDir, dir, script], { stdio: ['ignore', 'pipe', 'inherit'] })
    const line = await new Promise<string>((resolve, reject) => {
      let buf = ''
      daemon.stdout.on('data', (b: Buffer) => { buf += b.toString(); if (buf.includes('\n')) resolve(buf.slice(0, buf.indexOf('\n'))) })
      daemon.once('exit', (code) => reject(new Error(`the stand-in daemon exited (${code}) before printing its ref`)))
    })
    const ref = JSON.parse(line) as WorkloadRef
    await untilFileHas(join(dir, 'stdout.log'), 'ready')
    const gone = new Promise(resolve => daemon.once('exit', resolve))
    daemon.kill('SIGKILL')
    await gone
    const next = createProcessExecutor({ nodeId, stateDir }, { log })
    cleanups.push(async () => { for (const r of await next.list()) { await next.stop(r, 0); await next.remove(r) } await next.close() })
    expect(await next.alive(ref)).toBe(true)
    expect((await next.list()).map(r => r.id)).toContain(ref.id)
    const waited = next.wait(ref, { signal: AbortSignal.timeout(30_000) })
    await writeFile(join(dir, 'work', 'go'), '')
    expect(await waited).toMatchObject({ exitCode: 6, stopped: false })
    // It kept logging to its file after the daemon was gone.
    expect(await readText(join(dir, 'stdout.log'))).toBe('ready\ndone\n')
  })
})

const MiB = 2 ** 20
const FIXTURE = fileURLToPath(new URL('./fixtures/start-workload.ts', import.meta.url))

function cgroupV1Unavailable (): boolean {
  return !existsSync('/sys/fs/cgroup/cpu/cpu.cfs_quota_us') || !existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes') || process.getuid?.() !== 0
}

async function cgroupKind (): Promise<string | undefined> {
  const d = await detectCgroups({ node: `probe-${randomBytes(3).toString('hex')}` })
  if (d.cgroups !== undefined) await removeParentsIfEmpty(d.cgroups)
  return d.cgroups?.kind
}

/** The directory of the v1 group `pid` is in, for one controller. */
async function groupDirOf (controller: string, pid: number): Promise<string> {
  const line = (await readFile(`/proc/${pid}/cgroup`, 'utf8')).split('\n').find(l => l.split(':')[1]?.split(',').includes(controller))
  if (line === undefined) throw new Error(`no ${controller} line in /proc/${pid}/cgroup`)
  return join('/sys/fs/cgroup', controller, line.slice(line.indexOf(':', line.indexOf(':') + 1) + 1))
}
