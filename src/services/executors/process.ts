import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { constants as fsConstants } from 'node:fs'
import { access, mkdir, open, readFile, readdir, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises'
import { constants as osConstants } from 'node:os'
import { isAbsolute, join, resolve } from 'node:path'
import { z } from 'zod'
import { BadRequest, Conflict, ExecutorUnavailable, InvalidState, NotRunning, Timeout } from '../../lib/errors.js'
import type { Logger } from '../../lib/log.js'
import { detectCgroups, pidsIn, procsFiles, removeDirs, removeParentsIfEmpty, signalAll, type Cgroups } from './process/cgroups.js'
import { decodeName, checkedName, encodeName } from './process/names.js'
import {
  CLOCK_TICKS_PER_SECOND, allPids, groupMembers, isLive, pidOf, readCmdline, readEnviron, readRssBytes,
  readStat, readStatSync, signalSafely, type ProcStat
} from './process/proc.js'
import { WRAPPER_NAME, execArgs, parseExitFile, wrapperArgs } from './process/wrapper.js'
import type { ExecResult, Executor, ExitInfo, Probe, WorkloadLimits, WorkloadRef, WorkloadSpec } from './types.js'

/**
 * The `process` executor: a workload is a child process in its own session and process group
 * (`setsid`), in its own working directory, with exactly the spec's environment, its stdout and
 * stderr appended by file descriptor to the spec's files (no pipe through the daemon: the
 * workload keeps running and logging when the daemon is killed, and is re-adopted by the next
 * one). It runs under a small `/bin/sh` wrapper (`process/wrapper.ts`) that joins its control
 * groups first and records its exit status in a file afterwards.
 *
 * On disk, in `stateDir` (inside the node's data dir), per incarnation of a workload:
 *   `<alloc>.<token>.json`  the registry entry, written before the spawn (pid null) and again
 *                          with pid and start time after it: what `list()` finds after a crash;
 *   `<alloc>.<token>.exit`  the exit status, written by the wrapper.
 * and one control group per incarnation, `<cgroupRoot>/<node>/<alloc>.<token>`, where cgroups
 * can be used (see `process/cgroups.ts`).
 *
 * Limits, in order of preference: cgroup v2 (`cpu.max`, `memory.max`), cgroup v1
 * (`cpu.cfs_quota_us`, `memory.limit_in_bytes`), else `rlimit`: RLIMIT_AS (`ulimit -v`) for
 * memory, per process and of address space rather than resident memory, and no CPU limit; or
 * `none` when the spec asks for no limit. `WorkloadRef.limits` says which applied.
 */
export interface ProcessExecutorInit {
  /** This node's id (its PeerId): names its cgroup parent; other nodes' workloads are never seen. */
  nodeId: string
  /** Directory for registry and exit files (created); one per node, inside its data dir. */
  stateDir: string
  /**
   * Path inside each cgroup hierarchy under which `<node>/<workload>` groups are made. Default:
   * the daemon's own group + `/dms`. `false`: no cgroups (rlimit or none).
   */
  cgroupRoot?: string | false
  /** The shell the wrapper runs in (default `/bin/sh`). */
  shell?: string
  /** Poll period for a re-adopted workload's end (default ADOPTED_POLL_MS). */
  pollMs?: number
}

export interface ProcessExecutorComponents {
  log: Logger
}

/** How often a re-adopted workload (not our child: no exit event) is checked, one timer for all. */
export const ADOPTED_POLL_MS = 200
/** After SIGKILL, how long stop waits for the group to vanish before it reports failure. */
export const KILL_WAIT_MS = 5_000
/** Stop's checks back off from the first to the last period while it waits. */
const STOP_POLL_FIRST_MS = 5
const STOP_POLL_MAX_MS = 100
/** exec's output kept per stream (health checks need a little; a workload can print a lot). */
export const EXEC_OUTPUT_MAX_BYTES = 64 * 1024
/** The standard PATH (as dash's default) for finding a command when the spec sets none. */
export const STANDARD_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

const RegistrySchema = z.object({
  v: z.literal(1),
  nodeId: z.string(),
  allocationId: z.string(),
  token: z.string(),
  exitPath: z.string(),
  cwd: z.string(),
  pid: z.number().int().nullable(),
  startTime: z.string().nullable(),
  limits: z.string(),
  cgroups: z.array(z.string()),
  createdAt: z.number()
})
type Registry = z.infer<typeof RegistrySchema>

interface Child {
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  proc: ChildProcess
  /** Waits in progress: while there are any, the child holds the event loop open. */
  waiters: number
}

interface StopState { graceMs: number, escalated: boolean }

interface AdoptedWait {
  ref: WorkloadRef
  resolve: () => void
  reject: (err: unknown) => void
}

const keyOf = (ref: Pick<WorkloadRef, 'id' | 'startTime'>): string => `${ref.id}:${ref.startTime}`
const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

export function createProcessExecutor (init: ProcessExecutorInit, components: ProcessExecutorComponents): Executor {
  return new ProcessExecutor(init, components)
}

class ProcessExecutor implements Executor {
  readonly name = 'process' as const
  private readonly nodeId: string
  private readonly stateDir: string
  private readonly shell: string
  private readonly pollMs: number
  private readonly cgroupRoot: string | false | undefined
  private readonly log: Logger
  private detected: Promise<{ cgroups?: Cgroups, reason?: string }> | undefined
  private readonly children = new Map<string, Child>()
  private readonly results = new Map<string, ExitInfo>()
  private readonly stops = new Map<string, Promise<void>>()
  private readonly stopStates = new Map<string, StopState>()
  private readonly adopted = new Set<AdoptedWait>()
  /** Registry entries this instance wrote, by ref: no directory scan for its own workloads. */
  private readonly known = new Map<string, Registry>()
  private stateDirMade: Promise<void> | undefined
  private readonly pending = new Set<(err: unknown) => void>()
  private timer: NodeJS.Timeout | undefined
  private closed = false

  constructor (init: ProcessExecutorInit, components: ProcessExecutorComponents) {
    this.nodeId = init.nodeId
    this.stateDir = resolve(init.stateDir)
    this.shell = init.shell ?? '/bin/sh'
    this.pollMs = init.pollMs ?? ADOPTED_POLL_MS
    this.cgroupRoot = init.cgroupRoot
    this.log = components.log
  }

  private async cgroups (): Promise<{ cgroups?: Cgroups, reason?: string }> {
    if (this.detected === undefined) {
      this.detected = this.cgroupRoot === false
        ? Promise.resolve({ reason: 'cgroups disabled by configuration' })
        : detectCgroups({ root: this.cgroupRoot, node: encodeName(this.nodeId) }).then(d => d.cgroups !== undefined ? { cgroups: d.cgroups } : { reason: d.reason })
    }
    return await this.detected
  }

  async probe (): Promise<Probe> {
    try {
      await mkdir(this.stateDir, { recursive: true })
      await access(this.shell, fsConstants.X_OK)
      const { cgroups, reason } = await this.cgroups()
      const limits = cgroups !== undefined ? `limits by ${cgroups.kind} under ${cgroups.parents.join(', ')}` : `limits by rlimit (memory only): no usable cgroups (${reason ?? 'unknown'})`
      return { available: true, detail: limits }
    } catch (err) {
      return { available: false, reason: (err as Error).message }
    }
  }

  async start (spec: WorkloadSpec): Promise<WorkloadRef> {
    if (this.closed) throw new NotRunning('the process executor is closed')
    const name = checkSpec(spec)
    const cwd = spec.workingDir ?? join(spec.dir, 'work')
    if (!isAbsolute(cwd)) throw new BadRequest(`workingDir must be an absolute path, got '${cwd}'`, { field: 'workingDir', workingDir: cwd })
    const searchPath = spec.env.PATH ?? STANDARD_PATH
    // What start needs to know first, looked up at once (each is a few file operations).
    const [earlier, found, { cgroups }] = await Promise.all([
      this.stateDirReady().then(async () => await this.registriesOf(spec.allocationId)),
      mkdir(cwd, { recursive: true }).then(
        async () => await findCommand(spec.command[0], searchPath, cwd),
        (err: Error) => { throw new BadRequest(`workingDir ${cwd} cannot be made: ${err.message}`, { field: 'workingDir', workingDir: cwd }) }),
      this.cgroups()
    ])
    // One incarnation at a time: an earlier one still running is a conflict; an ended one is cleared.
    for (const reg of earlier) {
      const ref = this.refOf(reg)
      if (await this.alive(ref)) throw new Conflict(`allocation ${spec.allocationId} already runs a workload (pid ${ref.id})`, { allocationId: spec.allocationId, pid: ref.id })
      await this.removeIncarnation(reg)
    }
    if (found === undefined) {
      throw new BadRequest(`command not found: '${spec.command[0]}' is not an executable file${spec.command[0].includes('/') ? '' : ` on PATH ${searchPath}`}`, { field: 'command', command: spec.command[0], path: searchPath })
    }

    const token = randomBytes(6).toString('hex')
    const base = `${name}.${token}`
    const exitPath = join(this.stateDir, `${base}.exit`)
    let cgDirs: string[] = []
    // Without cgroups only memory can be limited (RLIMIT_AS); CPU cannot.
    let limits = spec.limits.ramBytes > 0 ? 'rlimit' : 'none'
    if (cgroups !== undefined) {
      try {
        cgDirs = await cgroups.create(base, spec.limits)
        limits = cgroups.kind
      } catch (err) {
        await removeDirs(cgroups.dirsOf(base))
        this.log.warn({ err, allocationId: spec.allocationId }, 'cannot create the workload cgroup; falling back to rlimit')
      }
    }
    const asKiB = limits === 'rlimit' && spec.limits.ramBytes > 0 ? Math.ceil(spec.limits.ramBytes / 1024) : undefined
    const reg: Registry = { v: 1, nodeId: this.nodeId, allocationId: spec.allocationId, token, exitPath, cwd, pid: null, startTime: null, limits, cgroups: cgDirs, createdAt: Date.now() }
    const regPath = join(this.stateDir, `${base}.json`)

    let out: FileHandle | undefined
    let err: FileHandle | undefined
    let child: ChildProcess
    let stat: ProcStat | undefined
    let exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
    let spawnError: Promise<Error>
    try {
      // The entry is written before the spawn: a crash right after it leaves a record list() finds.
      const opened = await Promise.allSettled([writeJson(regPath, reg), open(spec.stdoutPath, 'a'), open(spec.stderrPath, 'a')])
      out = opened[1].status === 'fulfilled' ? opened[1].value : undefined
      err = opened[2].status === 'fulfilled' ? opened[2].value : undefined
      for (const o of opened) if (o.status === 'rejected') throw o.reason
      if (out === undefined || err === undefined) throw new Error('unreachable: both log files are open')
      child = spawn(this.shell, wrapperArgs({ exitPath, asKiB, keepPwd: spec.env.PWD !== undefined, procs: procsFiles(cgDirs), argv: spec.command }), {
        cwd, env: spec.env, detached: true, stdio: ['ignore', out.fd, err.fd]
      })
      // Before the event loop turns (no await in between): the child may end at once, and then
      // it is reaped and its 'exit' emitted in the next turn; its zombie still has a stat now.
      stat = child.pid === undefined ? undefined : readStatSync(child.pid)
      exited = new Promise(resolve => { child.once('exit', (code, signal) => resolve({ code, signal })) })
      // A failed spawn reports on 'error' in a later turn: listened to now, never unhandled.
      spawnError = new Promise(resolve => { child.on('error', resolve) })
    } catch (e) {
      await out?.close()
      await err?.close()
      await this.removeIncarnation(reg)
      throw e
    }
    await Promise.all([out.close(), err.close()])
    const pid = child.pid
    if (pid === undefined) {
      const cause = await spawnError
      await this.removeIncarnation(reg)
      throw new ExecutorUnavailable(`cannot spawn ${this.shell}: ${cause.message}`, { executor: 'process' })
    }
    const startTime = stat?.startTime ?? ''
    spawnError.then((e) => { this.log.warn({ err: e, pid }, 'workload wrapper error') }, () => {})
    // The workload is no reason for the daemon to stay up (it outlives the daemon by design);
    // a wait on it is, while it lasts.
    child.unref()
    const ref: WorkloadRef = { executor: 'process', allocationId: spec.allocationId, id: String(pid), startTime, limits }
    const written: Registry = { ...reg, pid, startTime }
    this.children.set(keyOf(ref), { exited, proc: child, waiters: 0 })
    this.known.set(keyOf(ref), written)
    await writeJson(regPath, written)
    return ref
  }

  async wait (ref: WorkloadRef, opts: { signal?: AbortSignal } = {}): Promise<ExitInfo> {
    const key = keyOf(ref)
    const cached = this.results.get(key)
    if (cached !== undefined) return cached
    opts.signal?.throwIfAborted()
    if (this.closed) throw new NotRunning('the process executor is closed')
    const child = this.children.get(key)
    let wrapper: { code: number | null, signal: NodeJS.Signals | null } | undefined
    if (child !== undefined) {
      if (child.waiters++ === 0) child.proc.ref()
      try {
        wrapper = await this.abortable(child.exited, opts.signal)
      } finally {
        if (--child.waiters === 0) child.proc.unref()
      }
    } else {
      await this.untilDead(ref, opts.signal)
    }
    const reg = await this.registryOf(ref)
    const status = parseExitFile(reg === undefined ? undefined : await readFile(reg.exitPath, 'utf8').catch(() => undefined))
    const info = exitInfo(status, wrapper, this.stopStates.get(key))
    this.results.set(key, info)
    return info
  }

  /** Rejects with the signal's reason, or when the executor closes; frees its listener either way. */
  private async abortable<T> (p: Promise<T>, signal?: AbortSignal): Promise<T> {
    return await new Promise<T>((resolve, reject) => {
      const fail = (err: unknown): void => { cleanup(); reject(err) }
      const onAbort = (): void => fail(signal?.reason)
      const cleanup = (): void => {
        signal?.removeEventListener('abort', onAbort)
        this.pending.delete(fail)
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.pending.add(fail)
      p.then(v => { cleanup(); resolve(v) }, fail)
    })
  }

  /** Resolves once a workload that is not our child ended: one shared timer polls /proc. */
  private async untilDead (ref: WorkloadRef, signal?: AbortSignal): Promise<void> {
    if (!await this.alive(ref)) return
    let entry: AdoptedWait | undefined
    const ended = new Promise<void>((resolve, reject) => {
      entry = { ref, resolve, reject }
      this.adopted.add(entry)
    })
    if (this.timer === undefined) {
      // Ref'd: someone awaits it. Cleared as soon as no wait is left.
      this.timer = setInterval(() => { this.pollAdopted().catch(err => this.log.warn({ err }, 'adopted workload poll failed')) }, this.pollMs)
    }
    try {
      await this.abortable(ended, signal)
    } finally {
      if (entry !== undefined) this.adopted.delete(entry)
      this.stopTimerIfIdle()
    }
  }

  private async pollAdopted (): Promise<void> {
    for (const w of [...this.adopted]) {
      if (!await this.alive(w.ref)) { this.adopted.delete(w); w.resolve() }
    }
    this.stopTimerIfIdle()
  }

  private stopTimerIfIdle (): void {
    if (this.adopted.size === 0 && this.timer !== undefined) {
      clearInterval(this.timer)
      this.timer = undefined
    }
  }

  async stop (ref: WorkloadRef, graceMs: number): Promise<void> {
    const key = keyOf(ref)
    const running = this.stops.get(key)
    if (running !== undefined) return await running
    const p = this.doStop(ref, graceMs).finally(() => this.stops.delete(key))
    this.stops.set(key, p)
    await p
  }

  private async doStop (ref: WorkloadRef, graceMs: number): Promise<void> {
    const key = keyOf(ref)
    const target = await this.target(ref)
    if (!await target.anyLeft()) return
    const state: StopState = this.stopStates.get(key) ?? { graceMs, escalated: false }
    this.stopStates.set(key, state)
    await target.signal('SIGTERM')
    const child = this.children.get(key)
    if (await this.untilGone(target, graceMs, child)) return
    state.escalated = true
    await target.signal('SIGKILL')
    if (await this.untilGone(target, KILL_WAIT_MS, child)) return
    throw new InvalidState(`workload of ${ref.allocationId} still runs ${KILL_WAIT_MS} ms after SIGKILL`, { allocationId: ref.allocationId, pid: ref.id })
  }

  /** True once nothing of the target runs; false at the deadline. Bounded backoff between checks. */
  private async untilGone (target: Target, ms: number, child?: Child): Promise<boolean> {
    const deadline = Date.now() + ms
    let period = STOP_POLL_FIRST_MS
    for (;;) {
      if (!await target.anyLeft()) return true
      const left = deadline - Date.now()
      if (left <= 0) return false
      // Our own child's exit wakes the check at once; otherwise the period elapses.
      await Promise.race([sleep(Math.min(period, left)), ...(child !== undefined ? [child.exited] : [])])
      period = Math.min(period * 2, STOP_POLL_MAX_MS)
    }
  }

  /**
   * What stop signals: the process group when its leader is still the workload's wrapper (pid and
   * start time), else only members of that group in the wrapper's session that started after it
   * (a recycled pid never brings in someone else's processes), plus everything in its cgroups.
   */
  private async target (ref: WorkloadRef): Promise<Target> {
    const pid = pidOf(ref.id)
    const regs = await this.registriesFor(ref)
    const dirs = regs.flatMap(r => r.cgroups)
    if (ref.id === '') {
      // Only a cgroup is known (list() found it without a registry entry).
      const { cgroups } = await this.cgroups()
      if (cgroups !== undefined) for (const n of await this.unclaimedGroups(ref.allocationId)) dirs.push(...cgroups.dirsOf(n))
    }
    const leaderAlive = async (): Promise<boolean> => pid !== undefined && await this.alive(ref)
    const strays = async (): Promise<ProcStat[]> => {
      if (pid === undefined || ref.startTime === '') return []
      try { process.kill(-pid, 0) } catch (err) { if ((err as NodeJS.ErrnoException).code === 'ESRCH') return [] }
      const since = BigInt(ref.startTime)
      return (await groupMembers(pid)).filter(s => s.sid === pid && BigInt(s.startTime) >= since)
    }
    return {
      anyLeft: async () => await leaderAlive() || (await strays()).length > 0 || (await pidsIn(dirs)).length > 0,
      signal: async (sig) => {
        if (pid !== undefined && await leaderAlive()) signalSafely(-pid, sig)
        else for (const s of await strays()) signalSafely(s.pid, sig)
        await signalAll(dirs, sig)
      }
    }
  }

  async exec (ref: WorkloadRef, argv: string[], opts: { timeoutMs: number }): Promise<ExecResult> {
    if (argv.length === 0) throw new BadRequest('exec needs a command', { field: 'argv' })
    const pid = pidOf(ref.id)
    const env = pid === undefined ? undefined : await readEnviron(pid)
    if (pid === undefined || env === undefined || !await this.alive(ref)) {
      throw new InvalidState(`the workload of ${ref.allocationId} is not running`, { allocationId: ref.allocationId })
    }
    const reg = (await this.registriesFor(ref))[0]
    const cwd = reg?.cwd ?? '/'
    return await new Promise<ExecResult>((resolve, reject) => {
      const child = spawn(this.shell, execArgs({ procs: procsFiles(reg?.cgroups ?? []), argv }), { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
      const out = capped()
      const err = capped()
      child.stdout.on('data', out.add)
      child.stderr.on('data', err.add)
      let timedOut = false
      const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL') }, opts.timeoutMs)
      timer.unref()
      child.once('error', (e) => { clearTimeout(timer); reject(e) })
      child.once('close', (code, signal) => {
        clearTimeout(timer)
        if (timedOut) {
          reject(new Timeout(`exec in ${ref.allocationId} took longer than ${opts.timeoutMs} ms`, { allocationId: ref.allocationId, timeoutMs: opts.timeoutMs }))
          return
        }
        resolve({ exitCode: code ?? 128 + (signal === null ? 0 : osConstants.signals[signal]), stdout: out.text(), stderr: err.text() })
      })
    })
  }

  async stats (ref: WorkloadRef): Promise<{ cpuSeconds?: number, memoryBytes?: number }> {
    const regs = await this.registriesFor(ref)
    const { cgroups } = await this.cgroups()
    const dirs = regs[0]?.cgroups ?? []
    if (cgroups !== undefined && dirs.length > 0) return await cgroups.stats(dirs)
    const pid = pidOf(ref.id)
    if (pid === undefined || !await this.alive(ref)) return {}
    let ticks = 0
    let rss = 0
    for (const s of await groupMembers(pid)) {
      ticks += s.cpuTicks
      rss += await readRssBytes(s.pid) ?? 0
    }
    return { cpuSeconds: ticks / CLOCK_TICKS_PER_SECOND, memoryBytes: rss }
  }

  async alive (ref: WorkloadRef): Promise<boolean> {
    const pid = pidOf(ref.id)
    if (pid === undefined || ref.startTime === '') return false
    const s = await readStat(pid)
    // The group leader it was started as, not a recycled pid: same start time, still leading.
    return isLive(s) && s.startTime === ref.startTime && s.pgid === pid
  }

  async list (): Promise<WorkloadRef[]> {
    const regs = await this.registries()
    const refs: WorkloadRef[] = []
    const known = new Set<string>()
    const wrappers = await this.wrappersInProc()
    for (const reg of regs) {
      known.add(reg.exitPath)
      if (reg.pid === null) {
        // Crashed between writing the entry and recording the pid: the wrapper names its exit file.
        const w = wrappers.get(reg.exitPath)
        refs.push(w !== undefined ? { ...this.refOf(reg), id: String(w.pid), startTime: w.startTime } : this.refOf(reg))
      } else {
        refs.push(this.refOf(reg))
      }
    }
    // A wrapper of this node without an entry (lost): still ours to find and stop.
    for (const [exitPath, w] of wrappers) {
      if (known.has(exitPath)) continue
      const allocationId = decodeName(exitPath.slice(this.stateDir.length + 1).split('.')[0])
      if (allocationId !== undefined) refs.push({ executor: 'process', allocationId, id: String(w.pid), startTime: w.startTime, limits: 'none' })
    }
    // A cgroup without an entry: found by its name.
    const { cgroups } = await this.cgroups()
    if (cgroups !== undefined) {
      const claimed = new Set(regs.map(r => `${encodeName(r.allocationId)}.${r.token}`))
      const seen = new Set<string>()
      for (const n of await cgroups.list()) {
        if (claimed.has(n)) continue
        const allocationId = decodeName(n.split('.')[0])
        if (allocationId === undefined || seen.has(allocationId)) continue
        seen.add(allocationId)
        if (!refs.some(r => r.allocationId === allocationId)) refs.push({ executor: 'process', allocationId, id: '', startTime: '', limits: cgroups.kind })
      }
    }
    return refs
  }

  async remove (ref: WorkloadRef): Promise<void> {
    if (await this.alive(ref)) throw new InvalidState(`the workload of ${ref.allocationId} still runs: stop it first`, { allocationId: ref.allocationId, pid: ref.id })
    for (const reg of await this.registriesFor(ref)) await this.removeIncarnation(reg)
    if (ref.id === '') {
      const { cgroups } = await this.cgroups()
      if (cgroups !== undefined) for (const n of await this.unclaimedGroups(ref.allocationId)) await this.removeGroups(cgroups.dirsOf(n))
    }
    const key = keyOf(ref)
    this.children.delete(key)
    this.results.delete(key)
    this.stopStates.delete(key)
  }

  async close (): Promise<void> {
    this.closed = true
    const err = new NotRunning('the process executor closed')
    for (const fail of [...this.pending]) fail(err)
    this.adopted.clear()
    this.stopTimerIfIdle()
    // The node's cgroup parents, when no workload group is left in them (else they stay).
    const { cgroups } = await this.cgroups()
    if (cgroups !== undefined) await removeParentsIfEmpty(cgroups)
  }

  // ---- registry ----

  private refOf (reg: Registry): WorkloadRef {
    return { executor: 'process', allocationId: reg.allocationId, id: reg.pid === null ? '' : String(reg.pid), startTime: reg.startTime ?? '', limits: reg.limits }
  }

  private async registries (prefix = ''): Promise<Registry[]> {
    let names: string[]
    try { names = await readdir(this.stateDir) } catch { return [] }
    const out: Registry[] = []
    for (const n of names) {
      if (!n.endsWith('.json') || !n.startsWith(prefix)) continue
      try {
        const reg = RegistrySchema.parse(JSON.parse(await readFile(join(this.stateDir, n), 'utf8')))
        if (reg.nodeId === this.nodeId) out.push(reg)
      } catch (err) {
        // A partial write (the daemon died inside writeJson's rename window cannot leave one,
        // but a damaged disk can): reported, never silently taken for a workload.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ err, file: n }, 'unreadable process registry entry')
      }
    }
    return out
  }

  private async registriesOf (allocationId: string): Promise<Registry[]> {
    return (await this.registries(`${encodeName(allocationId)}.`)).filter(r => r.allocationId === allocationId)
  }

  private async stateDirReady (): Promise<void> {
    this.stateDirMade ??= mkdir(this.stateDir, { recursive: true }).then(() => {}, (err: unknown) => { this.stateDirMade = undefined; throw err })
    await this.stateDirMade
  }

  /** The incarnations a ref names: by pid and start time, or (id '') those without a pid. */
  private async registriesFor (ref: WorkloadRef): Promise<Registry[]> {
    const mine = this.known.get(keyOf(ref))
    if (mine !== undefined && mine.allocationId === ref.allocationId) return [mine]
    return (await this.registriesOf(ref.allocationId)).filter(r => ref.id === ''
      ? r.pid === null
      : String(r.pid) === ref.id && r.startTime === ref.startTime)
  }

  private async registryOf (ref: WorkloadRef): Promise<Registry | undefined> {
    return (await this.registriesFor(ref))[0]
  }

  private async removeIncarnation (reg: Registry): Promise<void> {
    await this.removeGroups(reg.cgroups)
    await Promise.all([rm(reg.exitPath, { force: true }), rm(join(this.stateDir, `${encodeName(reg.allocationId)}.${reg.token}.json`), { force: true })])
    if (reg.pid !== null) this.known.delete(keyOf({ id: String(reg.pid), startTime: reg.startTime ?? '' }))
  }

  private async removeGroups (dirs: string[]): Promise<void> {
    if (dirs.length === 0) return
    // Anything still inside (a process that left the group by setsid) is killed first.
    for (let attempt = 0; attempt < 20; attempt++) {
      if (await signalAll(dirs, 'SIGKILL') === 0) break
      await sleep(STOP_POLL_MAX_MS / 2)
    }
    const left = await removeDirs(dirs)
    if (left.length > 0) this.log.warn({ dirs: left }, 'cgroups could not be removed')
  }

  /** Workload groups of the allocation that no registry entry claims. */
  private async unclaimedGroups (allocationId: string): Promise<string[]> {
    const { cgroups } = await this.cgroups()
    if (cgroups === undefined) return []
    const name = encodeName(allocationId)
    const claimed = new Set((await this.registriesOf(allocationId)).map(r => `${name}.${r.token}`))
    return (await cgroups.list()).filter(n => n.startsWith(`${name}.`) && !claimed.has(n))
  }

  /** Live wrappers of this node in /proc, by their exit file (`$1`, under our state dir). */
  private async wrappersInProc (): Promise<Map<string, { pid: number, startTime: string }>> {
    const out = new Map<string, { pid: number, startTime: string }>()
    for (const pid of await allPids()) {
      const argv = await readCmdline(pid)
      // [shell, -c, script, WRAPPER_NAME, exitPath, ...]
      if (argv === undefined || argv[3] !== WRAPPER_NAME || argv[4]?.startsWith(`${this.stateDir}/`) !== true) continue
      const s = await readStat(pid)
      if (isLive(s) && s.pgid === pid) out.set(argv[4], { pid, startTime: s.startTime })
    }
    return out
  }
}

interface Target {
  anyLeft: () => Promise<boolean>
  signal: (sig: NodeJS.Signals) => Promise<void>
}

/** Refuses what this executor cannot run, naming the field; returns the file name of the id. */
function checkSpec (spec: WorkloadSpec): string {
  const name = checkedName(spec.allocationId)
  if (spec.image !== undefined) throw new BadRequest('the process executor runs no images (image is for docker)', { field: 'image', image: spec.image })
  if (spec.entrypoint !== undefined) throw new BadRequest('the process executor has no entrypoint (put the whole argv in command)', { field: 'entrypoint' })
  if (!Array.isArray(spec.command) || spec.command.length === 0 || spec.command[0] === '') throw new BadRequest('command must be a non-empty argv', { field: 'command' })
  for (const [i, a] of spec.command.entries()) {
    if (typeof a !== 'string' || a.includes('\0')) throw new BadRequest(`command[${i}] must be a string without NUL`, { field: `command.${i}` })
  }
  for (const [k, v] of Object.entries(spec.env)) {
    if (!/^[^=\0]+$/.test(k) || typeof v !== 'string' || v.includes('\0')) throw new BadRequest(`environment variable '${k.slice(0, 64)}' is not a NAME=value pair`, { field: `env.${k.slice(0, 64)}` })
  }
  checkLimits(spec.limits)
  return name
}

function checkLimits (l: WorkloadLimits): void {
  if (!Number.isFinite(l.cpuCores) || l.cpuCores < 0) throw new BadRequest(`limits.cpuCores must be ≥ 0, got ${l.cpuCores}`, { field: 'limits.cpuCores', value: l.cpuCores })
  if (!Number.isFinite(l.ramBytes) || l.ramBytes < 0) throw new BadRequest(`limits.ramBytes must be ≥ 0, got ${l.ramBytes}`, { field: 'limits.ramBytes', value: l.ramBytes })
}

/** The executable `cmd` names, as the shell will find it: a path (from cwd) or a PATH lookup. */
async function findCommand (cmd: string, searchPath: string, cwd: string): Promise<string | undefined> {
  const candidates = cmd.includes('/') ? [resolve(cwd, cmd)] : searchPath.split(':').map(d => resolve(cwd, d === '' ? '.' : d, cmd))
  for (const c of candidates) {
    try {
      if ((await stat(c)).isFile()) {
        await access(c, fsConstants.X_OK)
        return c
      }
    } catch { /* not this one */ }
  }
  return undefined
}

/** The exit as the supervisor reads it, from the wrapper's record, its own end and our stop. */
function exitInfo (status: number | undefined, wrapper: { code: number | null, signal: NodeJS.Signals | null } | undefined, stop: StopState | undefined): ExitInfo {
  const stopped = stop !== undefined
  if (status !== undefined) {
    const signal = status > 128 && status <= 128 + 64 ? signalName(status - 128) : null
    if (signal !== null) return { exitCode: null, signal, stopped, reason: `killed by ${signal}${stopped ? ' (stopped)' : ''}` }
    return { exitCode: status, signal: null, stopped, reason: `exit ${status}${stopped ? ' (stopped)' : ''}` }
  }
  // No record: the wrapper itself was killed (stop's SIGKILL, or someone else), or never ran.
  if (stop?.escalated === true) return { exitCode: null, signal: 'SIGKILL', stopped, reason: `killed by SIGKILL after ${stop.graceMs} ms grace` }
  if (wrapper?.signal != null) return { exitCode: null, signal: wrapper.signal, stopped, reason: `killed by ${wrapper.signal}${stopped ? ' (stopped)' : ''}` }
  if (wrapper?.code != null) return { exitCode: wrapper.code, signal: null, stopped, reason: `exit ${wrapper.code} before the workload ran` }
  return { exitCode: null, signal: null, stopped, reason: 'ended; its exit status is unknown (no record of it)' }
}

function signalName (n: number): string | null {
  for (const [name, num] of Object.entries(osConstants.signals)) if (num === n) return name
  return null
}

function capped (): { add: (b: Buffer) => void, text: () => string } {
  const parts: Buffer[] = []
  let size = 0
  return {
    add: (b: Buffer) => {
      if (size >= EXEC_OUTPUT_MAX_BYTES) return
      const part = b.subarray(0, EXEC_OUTPUT_MAX_BYTES - size)
      parts.push(part)
      size += part.length
    },
    text: () => Buffer.concat(parts).toString('utf8')
  }
}

/** Whole-file JSON written atomically (temp + rename): a crash never leaves half an entry. */
async function writeJson (path: string, value: unknown): Promise<void> {
  const tmp = `${path}.tmp`
  await writeFile(tmp, JSON.stringify(value), { mode: 0o600 })
  await rename(tmp, path)
}
