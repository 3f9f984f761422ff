import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { constants as fsConstants } from 'node:fs'
import { access, mkdir, open, readFile, readdir, realpath, rename, rm, stat, writeFile } from 'node:fs/promises'
import { createConnection, type Socket } from 'node:net'
import { constants as osConstants } from 'node:os'
import { delimiter, dirname, isAbsolute, join, normalize, resolve, sep } from 'node:path'
import { z } from 'zod'
import { BadRequest, Conflict, ExecutorUnavailable, InvalidState, NotRunning, Timeout } from '../../lib/errors.js'
import type { Logger } from '../../lib/log.js'
import { detectCgroups, pidsIn, procsFiles, removeDirs, removeParentsIfEmpty, type Cgroups } from './process/cgroups.js'
import { checkedName, decodeName, encodeName } from './process/names.js'
import { CLOCK_TICKS_PER_SECOND, allPids, isLive, pidOf, readCmdline, readRssBytes, readStat, readStatSync, signalSafely } from './process/proc.js'
import { execArgs } from './process/wrapper.js'
import type { ExecResult, Executor, ExitInfo, GuestSpec, Probe, WorkloadLimits, WorkloadRef, WorkloadSpec } from './types.js'
import { findInGuest, listInitramfs, type CpioEntry } from './vm/cpio.js'
import {
  ADOPTED_POLL_MS, BOOT_ARGS_MAX_LENGTH, DEFAULT_RAM_BYTES, DEFAULT_WORKING_DIR, EXEC_OUTPUT_MAX_BYTES, GROUP_EMPTY_CHECKS, GUEST_PATH, KERNEL_CMDLINE, KILL_WAIT_MS,
  MIN_RAM_BYTES, POLL_MAX_MS, PROTOCOL_BOOT_PARAMS, SOCKET_DIR, SPAWN_WAIT_MS, TCG_TB_SIZE_MIB
} from './vm/constants.js'
import { execScript, exitStatusOf, isReady, jobArchive, panicOf, parseReply, type ExecReply } from './vm/guest.js'

/**
 * The `vm` executor: one QEMU virtual machine per workload (`qemu-system-x86_64 -M pc`), with KVM
 * where a probe guest boots under it (scripts/vm-setup.sh finds out, `DMS_VM_ACCEL`), else TCG
 * (full emulation: what these machines and CI run). The guest is a kernel and an initramfs
 * (config, or `DMS_VM_KERNEL` / `DMS_VM_INITRD`); the spec's command runs in it as the test
 * guest's /init runs it, spoken to as `vm/guest.ts` specifies: the job as a second cpio archive,
 * stdout and stderr on their own serial ports appended by QEMU to the allocation's files, the exit
 * status and readiness on the console, stop and exec on a control port.
 *
 * QEMU runs in its own session (it outlives a `kill -9` of the daemon) with nothing of the
 * daemon's open. On disk, in `stateDir`, per incarnation:
 *   `<alloc>.<token>.json`     the registry entry (pid and start time once known): what `list()`
 *                             and a restarted daemon find;
 *   `<alloc>.<token>.console`  the guest's console (QEMU appends; the exit line is read from it);
 *   `<alloc>.<token>.initrd`   the guest's initramfs with the job appended;
 *   `<alloc>.<token>.qemu.log` QEMU's own stderr.
 * and a control socket `SOCKET_DIR/<hash>.sock` (unix paths are short).
 *
 * `WorkloadRef`: `id` is QEMU's pid, `startTime` its start time (field 22 of its stat), `limits`
 * `vm-kvm` or `vm-tcg`: the VM's vCPUs and memory are the limits (the workload cannot use more
 * than the guest has); QEMU's own process is not capped beyond that.
 */
export interface VmExecutorInit {
  /** This node's id: other nodes' VMs are never seen (each node has its own state dir). */
  nodeId: string
  /** Directory for registry, console and initramfs files (created); one per node. */
  stateDir: string
  /** The guest kernel (default `DMS_VM_KERNEL`). */
  kernel?: string
  /** The guest initramfs (default `DMS_VM_INITRD`). */
  initrd?: string
  /** The QEMU binary (default `qemu-system-x86_64` on the daemon's PATH). */
  qemu?: string
  /** `kvm` or `tcg` (default `DMS_VM_ACCEL`, else `tcg`: KVM is used only once a guest was seen to boot under it). */
  accel?: 'kvm' | 'tcg'
  /**
   * Directories whose files a spec may name as its own guest (`vm.kernel`, `vm.initrd`,
   * `vm.rootfs`). Default: the directories of the node's kernel and initramfs, and those listed
   * in `DMS_VM_IMAGE_DIRS` (`:`-separated).
   */
  imageDirs?: string[]
  /** Where the control sockets go (default SOCKET_DIR). */
  socketDir?: string
  /**
   * Path inside each cgroup hierarchy under which `<node>.vm/<vm>` groups are made, as the process
   * executor's (default: the daemon's own group + `/dms`); `false`: none (no CPU quota).
   */
  cgroupRoot?: string | false
}

export interface VmExecutorComponents {
  log: Logger
}

const RegistrySchema = z.object({
  v: z.literal(1),
  nodeId: z.string(),
  allocationId: z.string(),
  token: z.string(),
  pid: z.number().int().nullable(),
  startTime: z.string().nullable(),
  limits: z.string(),
  socket: z.string(),
  workingDir: z.string(),
  /** The CPU quota's groups QEMU runs in (none where cgroups cannot be used, or no quota asked). */
  cgroups: z.array(z.string()).default([]),
  createdAt: z.number()
})
type Registry = z.infer<typeof RegistrySchema>

interface StopState { graceMs: number, escalated: boolean, beforeReady: boolean }

interface Control {
  socket: Socket
  /** Exec requests sent and not yet answered, by id: rejected when the connection closes. */
  pending: Map<string, { resolve: (r: ExecReply) => void, reject: (err: unknown) => void }>
  /** True once the connection closed: nothing more is written on it. */
  ended: boolean
  closed: Promise<void>
}

const keyOf = (ref: Pick<WorkloadRef, 'id' | 'startTime'>): string => `${ref.id}:${ref.startTime}`
const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

export function createVmExecutor (init: VmExecutorInit, components: VmExecutorComponents): Executor {
  return new VmExecutor(init, components)
}

class VmExecutor implements Executor {
  readonly name = 'vm' as const
  private readonly nodeId: string
  private readonly stateDir: string
  private readonly kernel: string | undefined
  private readonly initrd: string | undefined
  private readonly qemu: string
  private readonly accel: 'kvm' | 'tcg'
  private readonly socketDir: string
  private readonly imageDirsInit: string[] | undefined
  private readonly cgroupRoot: string | false | undefined
  private detected: Promise<{ cgroups?: Cgroups, reason?: string }> | undefined
  private readonly log: Logger
  /** VMs this instance started: QEMU's exit event, and the child to keep the event loop up while someone waits. */
  private readonly children = new Map<string, { exited: Promise<void>, proc: ChildProcess, waiters: number }>()
  private readonly results = new Map<string, ExitInfo>()
  private readonly stops = new Map<string, Promise<void>>()
  private readonly stopStates = new Map<string, StopState>()
  private readonly controls = new Map<string, Promise<Control>>()
  private readonly pending = new Set<(err: unknown) => void>()
  private guestFiles: { path: string, mtimeMs: number, files: Map<string, CpioEntry> | undefined } | undefined
  private closed = false

  constructor (init: VmExecutorInit, components: VmExecutorComponents) {
    this.nodeId = init.nodeId
    this.stateDir = resolve(init.stateDir)
    this.kernel = init.kernel ?? process.env.DMS_VM_KERNEL
    this.initrd = init.initrd ?? process.env.DMS_VM_INITRD
    this.qemu = init.qemu ?? 'qemu-system-x86_64'
    const accel = init.accel ?? process.env.DMS_VM_ACCEL
    this.accel = accel === 'kvm' ? 'kvm' : 'tcg'
    this.socketDir = init.socketDir ?? SOCKET_DIR
    this.imageDirsInit = init.imageDirs
    this.cgroupRoot = init.cgroupRoot
    this.log = components.log
  }

  /**
   * Control groups for QEMU's CPU quota, detected as the process executor does, under a parent of
   * their own (`<node>.vm`: an encoded node id has no `.`, so the process executor, which treats
   * every group under `<node>` as one of its workloads, never sees these).
   */
  private async cgroups (): Promise<{ cgroups?: Cgroups, reason?: string }> {
    if (this.detected === undefined) {
      this.detected = this.cgroupRoot === false
        ? Promise.resolve({ reason: 'cgroups disabled by configuration' })
        : detectCgroups({ root: this.cgroupRoot, node: `${encodeName(this.nodeId)}.vm` }).then(d => d.cgroups !== undefined ? { cgroups: d.cgroups } : { reason: d.reason })
    }
    return await this.detected
  }

  /** What is missing for a VM to boot here, or the QEMU binary's path. */
  private async unavailable (): Promise<{ reason: string } | { qemu: string, kernel: string, initrd: string }> {
    const qemu = await findOnPath(this.qemu)
    if (qemu === undefined) return { reason: `no QEMU: ${this.qemu} is not an executable on PATH (scripts/vm-setup.sh installs qemu-system-x86)` }
    if (this.kernel === undefined || this.initrd === undefined) return { reason: 'no guest kernel and initramfs configured (DMS_VM_KERNEL, DMS_VM_INITRD: scripts/vm-setup.sh prints them)' }
    for (const [what, p] of [['kernel', this.kernel], ['initramfs', this.initrd]] as const) {
      try { await access(p, fsConstants.R_OK) } catch { return { reason: `the guest ${what} ${p} cannot be read` } }
    }
    return { qemu, kernel: this.kernel, initrd: this.initrd }
  }

  async probe (): Promise<Probe> {
    try {
      await mkdir(this.stateDir, { recursive: true })
      const u = await this.unavailable()
      if ('reason' in u) return { available: false, reason: u.reason }
      const { cgroups, reason } = await this.cgroups()
      const quota = cgroups !== undefined ? `CPU quota by ${cgroups.kind}` : `no CPU quota (${reason ?? 'no usable cgroups'})`
      return { available: true, detail: `QEMU ${this.accel === 'kvm' ? 'with KVM' : 'with TCG (emulation; no KVM that boots guests here)'}, ${quota}, guest ${u.kernel} + ${u.initrd}` }
    } catch (err) {
      return { available: false, reason: (err as Error).message }
    }
  }

  /**
   * The guest a spec boots: the node's kernel and initramfs, or files of the caller's own, each
   * checked (an absolute path, a readable regular file, under one of the node's image
   * directories once symlinks are resolved: the caller names files on this machine, and only
   * those the node's owner put there for guests may be read into a VM), and its boot arguments.
   */
  private async guestOf (req: GuestSpec, node: { kernel: string, initrd: string }): Promise<{ kernel: string, initrd: string, rootfs?: string, bootArgs?: string }> {
    const dirs = await this.imageDirs(node)
    const file = async (field: 'kernel' | 'initrd' | 'rootfs', p: string): Promise<string> => await checkedGuestFile(`vm.${field}`, p, dirs)
    const kernel = req.kernel === undefined ? node.kernel : await file('kernel', req.kernel)
    const initrd = req.initrd === undefined ? node.initrd : await file('initrd', req.initrd)
    const rootfs = req.rootfs === undefined ? undefined : await file('rootfs', req.rootfs)
    if (req.bootArgs !== undefined) checkBootArgs(req.bootArgs)
    return { kernel, initrd, ...(rootfs !== undefined ? { rootfs } : {}), ...(req.bootArgs !== undefined && req.bootArgs.trim() !== '' ? { bootArgs: req.bootArgs.trim() } : {}) }
  }

  /** Where guest files of a caller's own may be: the node's guest's directories and `DMS_VM_IMAGE_DIRS`, symlinks resolved. */
  private async imageDirs (node: { kernel: string, initrd: string }): Promise<string[]> {
    const given = this.imageDirsInit ?? [dirname(node.kernel), dirname(node.initrd), ...(process.env.DMS_VM_IMAGE_DIRS ?? '').split(delimiter)]
    const out = new Set<string>()
    for (const d of given) {
      if (!isAbsolute(d)) continue
      try { out.add(await realpath(d)) } catch { /* not there: nothing under it */ }
    }
    return [...out]
  }

  /** The guest initramfs's files, read once per version of the file (command look-ups need them). */
  private async guest (path: string): Promise<Map<string, CpioEntry> | undefined> {
    const s = await stat(path)
    if (this.guestFiles?.path !== path || this.guestFiles.mtimeMs !== s.mtimeMs) {
      this.guestFiles = { path, mtimeMs: s.mtimeMs, files: listInitramfs(await readFile(path)) }
    }
    return this.guestFiles.files
  }

  async start (spec: WorkloadSpec): Promise<WorkloadRef> {
    if (this.closed) throw new NotRunning('the vm executor is closed')
    const name = checkSpec(spec)
    const u = await this.unavailable()
    if ('reason' in u) throw new ExecutorUnavailable(`the vm executor is not available here: ${u.reason}`, { executor: 'vm' })
    const workingDir = spec.workingDir ?? DEFAULT_WORKING_DIR
    if (!isAbsolute(workingDir)) throw new BadRequest(`workingDir must be an absolute path in the guest, got '${workingDir}'`, { field: 'workingDir', workingDir })
    const g = await this.guestOf(spec.guest ?? {}, u)
    const searchPath = spec.env.PATH ?? GUEST_PATH
    const files = await this.guest(g.initrd)
    // The guest is a known initramfs: a command that is not in it is refused before anything boots
    // (with a root disk, the guest's /init may run it from there: not checked).
    if (g.rootfs === undefined && files !== undefined && findInGuest(files, spec.command[0], searchPath, workingDir) === undefined) {
      throw new BadRequest(`command not found in the guest: '${spec.command[0]}' is not an executable file${spec.command[0].includes('/') ? '' : ` on PATH ${searchPath}`}`, { field: 'command', command: spec.command[0], path: searchPath })
    }
    await mkdir(this.stateDir, { recursive: true })
    for (const reg of await this.registriesOf(spec.allocationId)) {
      const ref = this.refOf(reg)
      if (await this.alive(ref)) throw new Conflict(`allocation ${spec.allocationId} already runs a VM (pid ${ref.id})`, { allocationId: spec.allocationId, pid: ref.id })
      await this.removeIncarnation(reg)
    }

    const token = randomBytes(6).toString('hex')
    const base = join(this.stateDir, `${name}.${token}`)
    await mkdir(this.socketDir, { recursive: true, mode: 0o700 })
    const socket = this.socketOf(token)
    const limits = `vm-${this.accel}`
    // A fractional CPU reservation is a CFS quota on QEMU's threads, as for a process; the vCPU
    // count alone (ceil) would let a 0.1-core VM take a whole core.
    const { cgroups } = await this.cgroups()
    let cgDirs: string[] = []
    if (cgroups !== undefined && spec.limits.cpuCores > 0) {
      try {
        cgDirs = await cgroups.create(`${name}.${token}`, { cpuCores: spec.limits.cpuCores, ramBytes: 0 })
      } catch (err) {
        await removeDirs(cgroups.dirsOf(`${name}.${token}`))
        this.log.warn({ err, allocationId: spec.allocationId }, 'cannot create the VM\'s cgroup; it runs without a CPU quota')
      }
    }
    const reg: Registry = { v: 1, nodeId: this.nodeId, allocationId: spec.allocationId, token, pid: null, startTime: null, limits, socket, workingDir, cgroups: cgDirs, createdAt: Date.now() }
    const regPath = `${base}.json`
    const initrd = `${base}.initrd`
    const args = qemuArgs({ accel: this.accel, limits: spec.limits, kernel: g.kernel, initrd, rootfs: g.rootfs, bootArgs: g.bootArgs, console: `${base}.console`, stdout: spec.stdoutPath, stderr: spec.stderrPath, socket })

    let child: ChildProcess
    let exited: Promise<void>
    let startTime = ''
    try {
      // The shared guest image, padded to 4 bytes (the kernel reads the next archive's
      // alignment from where it starts), then this VM's job.
      const guestImage = await readFile(g.initrd)
      const job = jobArchive({ argv: spec.command, env: spec.env, workingDir })
      await Promise.all([
        writeJson(regPath, reg),
        writeFile(initrd, Buffer.concat([guestImage, Buffer.alloc((4 - guestImage.length % 4) % 4), job]), { mode: 0o600 }),
        // QEMU opens the log files itself, appending; they exist for the reader from the start.
        open(spec.stdoutPath, 'a').then(async f => await f.close()),
        open(spec.stderrPath, 'a').then(async f => await f.close())
      ])
      const qemuLog = await open(`${base}.qemu.log`, 'a')
      try {
        // With a quota, a shell joins the groups and replaces itself with QEMU (same pid, same
        // start time): no instruction of QEMU runs outside them.
        const [cmd, argv] = cgDirs.length > 0 ? ['/bin/sh', execArgs({ procs: procsFiles(cgDirs), argv: [u.qemu, ...args] })] : [u.qemu, args]
        child = spawn(cmd, argv, { cwd: this.stateDir, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, detached: true, stdio: ['ignore', 'ignore', qemuLog.fd] })
        const s = child.pid === undefined ? undefined : readStatSync(child.pid)
        startTime = s?.startTime ?? ''
        exited = new Promise(resolve => { child.once('exit', () => resolve()) })
        child.once('error', () => {})
      } finally {
        await qemuLog.close()
      }
    } catch (e) {
      await this.removeIncarnation(reg)
      throw e
    }
    const pid = child.pid
    if (pid === undefined) {
      await this.removeIncarnation(reg)
      throw new ExecutorUnavailable(`cannot spawn ${u.qemu}`, { executor: 'vm' })
    }
    child.unref()
    const ref: WorkloadRef = { executor: 'vm', allocationId: spec.allocationId, id: String(pid), startTime, limits }
    this.children.set(keyOf(ref), { exited, proc: child, waiters: 0 })
    await writeJson(regPath, { ...reg, pid, startTime })
    // QEMU has parsed its arguments, opened its files (the control socket first) and loaded the
    // kernel once the firmware writes to the console (SeaBIOS's banner, before the kernel runs).
    // If it ends with nothing there, it refused something (a kernel it cannot load, a file it
    // cannot open), and says what on its stderr. (A VM that ran its whole job meanwhile left its
    // console full: started, and its wait will say how it ended.)
    const consolePath = `${base}.console`
    let ended = false
    exited.then(() => { ended = true }, () => {})
    const up = await untilTrue(async () => await sizeOf(consolePath) > 0, SPAWN_WAIT_MS, exited)
    // Still running without a word from its firmware (a firmware that prints nothing): it runs.
    if (!up && !ended) this.log.warn({ allocationId: spec.allocationId, pid }, `QEMU's firmware wrote nothing to the console within ${SPAWN_WAIT_MS} ms; taking the VM as started`)
    if (!up && ended) {
      const why = (await readFile(`${base}.qemu.log`, 'utf8').catch(() => '')).trim().split('\n').slice(-3).join(' ')
      signalSafely(pid, 'SIGKILL')
      await exited
      await this.removeIncarnation({ ...reg, pid, startTime })
      this.children.delete(keyOf(ref))
      throw new ExecutorUnavailable(`QEMU did not start the VM: ${why === '' ? 'it exited without a word' : why}`, { executor: 'vm' })
    }
    return ref
  }

  async wait (ref: WorkloadRef, opts: { signal?: AbortSignal } = {}): Promise<ExitInfo> {
    const key = keyOf(ref)
    const cached = this.results.get(key)
    if (cached !== undefined) return cached
    opts.signal?.throwIfAborted()
    if (this.closed) throw new NotRunning('the vm executor is closed')
    const child = this.children.get(key)
    if (child !== undefined) {
      // The VM is no reason for the daemon to stay up (it outlives the daemon by design); a wait on it is.
      if (child.waiters++ === 0) child.proc.ref()
      try {
        await this.abortable(child.exited, opts.signal)
      } finally {
        if (--child.waiters === 0) child.proc.unref()
      }
    } else {
      await this.abortable(this.untilDead(ref, opts.signal), opts.signal)
    }
    const reg = (await this.registriesFor(ref))[0]
    const console = reg === undefined ? '' : await readFile(`${this.baseOf(reg)}.console`, 'utf8').catch(() => '')
    const info = exitInfo(exitStatusOf(console), this.stopStates.get(key), panicOf(console))
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

  /** A VM this process did not start has no exit event: its pid is checked every ADOPTED_POLL_MS. */
  private async untilDead (ref: WorkloadRef, signal?: AbortSignal): Promise<void> {
    for (;;) {
      if (!await this.alive(ref)) return
      if (signal?.aborted === true || this.closed) return
      await sleep(ADOPTED_POLL_MS)
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
    if (!await this.alive(ref)) return
    const pid = Number(ref.id)
    const reg = (await this.registriesFor(ref))[0]
    const ready = reg !== undefined && isReady(await readFile(`${this.baseOf(reg)}.console`, 'utf8').catch(() => ''))
    const state: StopState = this.stopStates.get(key) ?? { graceMs, escalated: false, beforeReady: !ready }
    this.stopStates.set(key, state)
    const child = this.children.get(key)
    const gone = async (ms: number): Promise<boolean> => await untilTrue(async () => !await this.alive(ref), ms, child?.exited)
    if (ready && reg !== undefined) {
      // SIGTERM to the workload in the guest; it ends its own way within the grace, /init
      // reports its status and powers off.
      if (await this.send(ref, reg, 'T').then(() => true, () => false) && await gone(graceMs)) return
      state.escalated = true
      if (await this.send(ref, reg, 'K').then(() => true, () => false) && await gone(KILL_WAIT_MS)) return
    }
    // Still booting (no workload to signal yet), or a guest that does not answer: the VM is killed.
    state.escalated = true
    signalSafely(pid, 'SIGKILL')
    if (await gone(KILL_WAIT_MS)) return
    throw new InvalidState(`the VM of ${ref.allocationId} still runs ${KILL_WAIT_MS} ms after SIGKILL`, { allocationId: ref.allocationId, pid: ref.id })
  }

  /**
   * The control channel of a VM: one connection per VM and instance, opened on first use and
   * again after it closed (QEMU serves one client at a time; a closed connection is never reused).
   */
  private async control (ref: WorkloadRef, reg: Registry): Promise<Control> {
    const key = keyOf(ref)
    let c = this.controls.get(key)
    if (c === undefined) {
      const made: Promise<Control> = new Promise<Control>((resolve, reject) => {
        const socket = createConnection(reg.socket)
        const ctl: Control = { socket, pending: new Map(), ended: false, closed: Promise.resolve() }
        let buf = ''
        ctl.closed = new Promise<void>(done => {
          socket.once('close', () => {
            ctl.ended = true
            if (this.controls.get(key) === made) this.controls.delete(key)
            const err = new InvalidState(`the control channel of ${ref.allocationId}'s VM closed before it answered (the VM ended, or this executor closed)`, { allocationId: ref.allocationId })
            for (const p of ctl.pending.values()) p.reject(err)
            ctl.pending.clear()
            done()
          })
        })
        socket.once('error', (err) => { reject(err) })
        socket.once('connect', () => {
          socket.on('error', () => {})
          socket.unref()
          resolve(ctl)
        })
        socket.setEncoding('utf8')
        socket.on('data', (d: string) => {
          buf += d
          // Bounded: a line without an end is dropped once it outgrows any reply exec can give.
          if (buf.length > 8 * EXEC_OUTPUT_MAX_BYTES * 2) buf = ''
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            const r = parseReply(buf.slice(0, nl))
            buf = buf.slice(nl + 1)
            if (r !== undefined) { ctl.pending.get(r.id)?.resolve(r); ctl.pending.delete(r.id) }
          }
        })
      })
      c = made
      made.catch(() => { if (this.controls.get(key) === made) this.controls.delete(key) })
      this.controls.set(key, made)
    }
    const ctl = await c
    // Closed meanwhile (its close event already ran and dropped it): a new connection.
    return ctl.ended ? await this.control(ref, reg) : ctl
  }

  /** Writes one request line; rejects once the line cannot go out on this connection. */
  private async write (ctl: Control, ref: WorkloadRef, line: string): Promise<void> {
    if (ctl.ended) throw new InvalidState(`the control channel of ${ref.allocationId}'s VM closed`, { allocationId: ref.allocationId })
    await new Promise<void>((resolve, reject) => { ctl.socket.write(`${line}\n`, err => { if (err == null) resolve(); else reject(err) }) })
  }

  private async send (ref: WorkloadRef, reg: Registry, line: string): Promise<void> {
    await this.write(await this.control(ref, reg), ref, line)
  }

  async exec (ref: WorkloadRef, argv: string[], opts: { timeoutMs: number }): Promise<ExecResult> {
    if (argv.length === 0) throw new BadRequest('exec needs a command', { field: 'argv' })
    const reg = (await this.registriesFor(ref))[0]
    if (reg === undefined || !await this.alive(ref)) throw new InvalidState(`the VM of ${ref.allocationId} is not running`, { allocationId: ref.allocationId })
    const deadline = Date.now() + opts.timeoutMs
    const timeout = (): Timeout => new Timeout(`exec in ${ref.allocationId}'s VM took longer than ${opts.timeoutMs} ms`, { allocationId: ref.allocationId, timeoutMs: opts.timeoutMs })
    // A guest still booting has no agent yet: the request waits for its ready line (or the VM's end).
    const consolePath = `${this.baseOf(reg)}.console`
    const ready = async (): Promise<boolean> => isReady(await readFile(consolePath, 'utf8').catch(() => ''))
    const settled = await untilTrue(async () => await ready() || !await this.alive(ref), opts.timeoutMs)
    if (settled && !await ready()) throw new InvalidState(`the VM of ${ref.allocationId} ended before its guest was ready`, { allocationId: ref.allocationId })
    if (!settled) throw timeout()
    const ctl = await this.control(ref, reg)
    // Random, not a counter: another instance (a restarted daemon) must never take a reply to an
    // exec of its predecessor's for its own.
    const id = randomBytes(8).toString('hex')
    let timer: NodeJS.Timeout | undefined
    try {
      // The reply is awaited from before the request goes out: it cannot come before its listener.
      const reply = new Promise<ExecReply>((resolve, reject) => { ctl.pending.set(id, { resolve, reject }) })
      const expired = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(timeout()), Math.max(0, deadline - Date.now())) })
      const r = await Promise.race([reply, expired, this.write(ctl, ref, `X ${id} ${Buffer.from(execScript(argv)).toString('base64')}`).then(async () => await new Promise<never>(() => {}))])
      return { exitCode: r.status, stdout: r.stdout.subarray(0, EXEC_OUTPUT_MAX_BYTES).toString('utf8'), stderr: r.stderr.subarray(0, EXEC_OUTPUT_MAX_BYTES).toString('utf8') }
    } finally {
      clearTimeout(timer)
      ctl.pending.delete(id)
    }
  }

  async stats (ref: WorkloadRef): Promise<{ cpuSeconds?: number, memoryBytes?: number }> {
    const pid = pidOf(ref.id)
    if (pid === undefined || !await this.alive(ref)) return {}
    const s = await readStat(pid)
    const rss = await readRssBytes(pid)
    // The VM as the host sees it: QEMU's CPU time and resident memory (guest RAM it touched included).
    return { cpuSeconds: s === undefined ? undefined : s.cpuTicks / CLOCK_TICKS_PER_SECOND, memoryBytes: rss }
  }

  async alive (ref: WorkloadRef): Promise<boolean> {
    const pid = pidOf(ref.id)
    if (pid === undefined || ref.startTime === '') return false
    const s = await readStat(pid)
    if (!isLive(s) || s.startTime !== ref.startTime) return false
    const argv = await readCmdline(pid)
    return argv !== undefined && argv.some(a => a.includes(`${this.stateDir}/`))
  }

  async list (): Promise<WorkloadRef[]> {
    const regs = await this.registries()
    const refs: WorkloadRef[] = regs.map(r => this.refOf(r))
    const known = new Set(regs.map(r => `${encodeName(r.allocationId)}.${r.token}`))
    // A VM of this node whose entry is lost (or was never completed): found by its console path.
    for (const pid of await allPids()) {
      const argv = await readCmdline(pid)
      const con = argv?.find(a => a.startsWith(`file,id=con,path=${this.stateDir}/`))
      if (con === undefined) continue
      const file = con.slice(`file,id=con,path=${this.stateDir}/`.length).replace(/\.console$/, '')
      const s = await readStat(pid)
      if (!isLive(s)) continue
      if (known.has(file)) {
        // An entry without a pid (a crash between the spawn and its second write): completed here.
        const i = regs.findIndex(r => `${encodeName(r.allocationId)}.${r.token}` === file && r.pid === null)
        if (i >= 0) refs[i] = { ...refs[i], id: String(pid), startTime: s.startTime }
        continue
      }
      const allocationId = decodeName(file.split('.')[0])
      if (allocationId !== undefined) refs.push({ executor: 'vm', allocationId, id: String(pid), startTime: s.startTime, limits: `vm-${this.accel}` })
    }
    return refs
  }

  async remove (ref: WorkloadRef): Promise<void> {
    if (await this.alive(ref)) throw new InvalidState(`the VM of ${ref.allocationId} still runs: stop it first`, { allocationId: ref.allocationId, pid: ref.id })
    for (const reg of await this.registriesFor(ref)) await this.removeIncarnation(reg)
    await this.removeLeftovers(ref.allocationId)
    const key = keyOf(ref)
    this.children.delete(key)
    this.results.delete(key)
    this.stopStates.delete(key)
  }

  async close (): Promise<void> {
    this.closed = true
    const err = new NotRunning('the vm executor closed')
    for (const fail of [...this.pending]) fail(err)
    for (const c of [...this.controls.values()]) {
      await c.then(async ctl => { ctl.socket.destroy(); await ctl.closed }, () => {})
    }
    this.controls.clear()
    // The node's cgroup parents, when no VM's group is left in them (else they stay).
    const { cgroups } = await this.cgroups()
    if (cgroups !== undefined) await removeParentsIfEmpty(cgroups)
  }

  // ---- registry ----

  private baseOf (reg: Registry): string {
    return join(this.stateDir, `${encodeName(reg.allocationId)}.${reg.token}`)
  }

  private refOf (reg: Registry): WorkloadRef {
    return { executor: 'vm', allocationId: reg.allocationId, id: reg.pid === null ? '' : String(reg.pid), startTime: reg.startTime ?? '', limits: reg.limits }
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
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ err, file: n }, 'unreadable vm registry entry')
      }
    }
    return out
  }

  private async registriesOf (allocationId: string): Promise<Registry[]> {
    return (await this.registries(`${encodeName(allocationId)}.`)).filter(r => r.allocationId === allocationId)
  }

  private async registriesFor (ref: WorkloadRef): Promise<Registry[]> {
    return (await this.registriesOf(ref.allocationId)).filter(r => ref.id === '' ? r.pid === null : String(r.pid) === ref.id && r.startTime === ref.startTime)
  }

  /**
   * Files of the allocation's incarnations whose registry entry is gone (lost, as list() can find
   * a VM without one): an entry is written before any other file, so files without one belong to
   * no start in progress.
   */
  private async removeLeftovers (allocationId: string): Promise<void> {
    const prefix = `${encodeName(allocationId)}.`
    let names: string[]
    try { names = await readdir(this.stateDir) } catch { return }
    const tokens = new Set(names.filter(n => n.startsWith(prefix)).map(n => n.slice(prefix.length).split('.')[0]))
    for (const token of tokens) {
      if (names.includes(`${prefix}${token}.json`)) continue
      await Promise.all(['.initrd', '.console', '.qemu.log'].map(async ext => await rm(join(this.stateDir, `${prefix}${token}${ext}`), { force: true })))
      await rm(this.socketOf(token), { force: true })
      const { cgroups } = await this.cgroups()
      if (cgroups !== undefined) await this.removeGroups(cgroups.dirsOf(`${prefix}${token}`))
    }
  }

  /**
   * Removes a VM's groups. A QEMU that just ended may still be listed in them until it is reaped
   * (alive() already says no for a zombie): the removal waits for that, bounded.
   */
  private async removeGroups (dirs: string[]): Promise<void> {
    if (dirs.length === 0) return
    for (let i = 0; i < GROUP_EMPTY_CHECKS && (await pidsIn(dirs)).length > 0; i++) await sleep(POLL_MAX_MS / 4)
    const left = await removeDirs(dirs)
    if (left.length > 0) this.log.warn({ dirs: left }, 'VM cgroups could not be removed')
  }

  /** A VM's control socket: in a short directory (unix paths are limited), named by a hash. */
  private socketOf (token: string): string {
    return join(this.socketDir, `${createHash('sha256').update(`${this.stateDir}\0${token}`).digest('hex').slice(0, 24)}.sock`)
  }

  private async removeIncarnation (reg: Registry): Promise<void> {
    const base = this.baseOf(reg)
    await this.removeGroups(reg.cgroups)
    await Promise.all(['.initrd', '.console', '.qemu.log', '.json'].map(async ext => await rm(`${base}${ext}`, { force: true })))
    await rm(reg.socket, { force: true })
    if (reg.pid !== null) {
      const key = keyOf({ id: String(reg.pid), startTime: reg.startTime ?? '' })
      const c = this.controls.get(key)
      this.controls.delete(key)
      await c?.then(ctl => ctl.socket.destroy(), () => {})
    }
  }
}

/** The QEMU command line of one VM (see vm/guest.ts for the ports). */
export function qemuArgs (o: { accel: 'kvm' | 'tcg', limits: WorkloadLimits, kernel: string, initrd: string, rootfs?: string, bootArgs?: string, console: string, stdout: string, stderr: string, socket: string }): string[] {
  const vcpus = Math.max(1, Math.ceil(o.limits.cpuCores))
  const ram = o.limits.ramBytes === 0 ? DEFAULT_RAM_BYTES : Math.max(MIN_RAM_BYTES, o.limits.ramBytes)
  const opt = (p: string): string => p.replaceAll(',', ',,')
  return [
    '-name', 'dms-vm',
    '-M', 'pc', '-accel', o.accel === 'tcg' ? `tcg,tb-size=${TCG_TB_SIZE_MIB}` : 'kvm',
    // Nothing QEMU would add by itself (NIC and its option ROM, VGA, floppy, CD-ROM, monitor).
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-smp', String(vcpus), '-m', `${Math.floor(ram / 2 ** 20)}M`,
    // The caller's arguments after the executor's: the kernel takes the last of a repeated one,
    // which is why those the protocol needs cannot be given at all (checkBootArgs).
    '-kernel', o.kernel, '-initrd', o.initrd, '-append', o.bootArgs === undefined ? KERNEL_CMDLINE : `${KERNEL_CMDLINE} ${o.bootArgs}`,
    // A root disk is read-only to the guest: the image on the node is never written, and VMs may share it.
    ...(o.rootfs !== undefined ? ['-drive', `file=${opt(o.rootfs)},format=raw,if=virtio,readonly=on`] : []),
    '-chardev', `file,id=con,path=${opt(o.console)}`, '-serial', 'chardev:con',
    '-chardev', `file,id=out,path=${opt(o.stdout)},append=on`, '-serial', 'chardev:out',
    '-chardev', `file,id=err,path=${opt(o.stderr)},append=on`, '-serial', 'chardev:err',
    '-chardev', `socket,id=ctl,path=${opt(o.socket)},server=on,wait=off`, '-serial', 'chardev:ctl'
  ]
}

/** Refuses what this executor cannot run, naming the field; returns the file name of the id. */
function checkSpec (spec: WorkloadSpec): string {
  const name = checkedName(spec.allocationId)
  if (spec.image !== undefined) throw new BadRequest('the vm executor runs no images (its guest is the configured kernel and initramfs)', { field: 'image', image: spec.image })
  if (spec.entrypoint !== undefined) throw new BadRequest('the vm executor has no entrypoint (put the whole argv in command)', { field: 'entrypoint' })
  if (!Array.isArray(spec.command) || spec.command.length === 0 || spec.command[0] === '') throw new BadRequest('command must be a non-empty argv', { field: 'command' })
  for (const [i, a] of spec.command.entries()) {
    if (typeof a !== 'string' || a.includes('\0') || a.includes('\n')) throw new BadRequest(`command[${i}] must be a string without NUL or newline`, { field: `command.${i}` })
  }
  for (const [k, v] of Object.entries(spec.env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) || typeof v !== 'string' || v.includes('\0')) throw new BadRequest(`environment variable '${k.slice(0, 64)}' is not a NAME=value pair`, { field: `env.${k.slice(0, 64)}` })
  }
  // The guest has no network device: a port could not be reached.
  if (spec.ports.length > 0) throw new BadRequest('the vm executor gives its guests no network yet: no ports', { field: 'ports' })
  const l = spec.limits
  if (!Number.isFinite(l.cpuCores) || l.cpuCores < 0) throw new BadRequest(`limits.cpuCores must be ≥ 0, got ${l.cpuCores}`, { field: 'limits.cpuCores', value: l.cpuCores })
  if (!Number.isFinite(l.ramBytes) || l.ramBytes < 0) throw new BadRequest(`limits.ramBytes must be ≥ 0, got ${l.ramBytes}`, { field: 'limits.ramBytes', value: l.ramBytes })
  return name
}

/**
 * A guest file named by a spec: an absolute path, resolving (symlinks followed) to a readable
 * regular file under one of `dirs`. BadRequest naming `field` otherwise.
 */
async function checkedGuestFile (field: string, p: string, dirs: string[]): Promise<string> {
  if (!isAbsolute(p) || normalize(p) !== p) throw new BadRequest(`${field} must be an absolute, normalized path on the node, got '${p.slice(0, 200)}'`, { field })
  let real: string
  try {
    real = await realpath(p)
    if (!(await stat(real)).isFile()) throw new Error('not a regular file')
    await access(real, fsConstants.R_OK)
  } catch {
    throw new BadRequest(`${field}: ${p} is not a readable regular file on this node`, { field, path: p })
  }
  if (!dirs.some(d => real.startsWith(d.endsWith(sep) ? d : `${d}${sep}`))) {
    throw new BadRequest(`${field}: ${p} is not under an image directory of this node (${dirs.join(', ') || 'none'}; DMS_VM_IMAGE_DIRS adds some)`, { field, path: p })
  }
  return real
}

/** Boot arguments a caller may add: printable, bounded, none the guest protocol depends on. */
function checkBootArgs (args: string): void {
  const field = 'vm.bootArgs'
  if (args.length > BOOT_ARGS_MAX_LENGTH) throw new BadRequest(`${field} is longer than ${BOOT_ARGS_MAX_LENGTH} characters`, { field })
  if (!/^[\x20-\x7e]*$/.test(args)) throw new BadRequest(`${field} may hold printable ASCII only`, { field })
  for (const word of args.split(' ').filter(w => w !== '')) {
    if (word === '--') throw new BadRequest(`${field}: '--' (arguments for init) is not supported: the guest's init is the executor's`, { field })
    const key = word.split('=')[0]
    if (PROTOCOL_BOOT_PARAMS.includes(key)) throw new BadRequest(`${field}: ${key} is set by the executor (the guest protocol needs it) and cannot be given`, { field, param: key })
  }
}

function exitInfo (status: number | undefined, stop: StopState | undefined, panic?: string): ExitInfo {
  const stopped = stop !== undefined
  if (status !== undefined) {
    const signal = status > 128 && status <= 128 + 64 ? signalName(status - 128) : null
    if (signal !== null) return { exitCode: null, signal, stopped, reason: `killed by ${signal} in the VM${stopped ? ' (stopped)' : ''}` }
    return { exitCode: status, signal: null, stopped, reason: `exit ${status}${stopped ? ' (stopped)' : ''}` }
  }
  if (stop?.beforeReady === true) return { exitCode: null, signal: 'SIGKILL', stopped, reason: 'stopped while its VM booted' }
  if (stop?.escalated === true) return { exitCode: null, signal: 'SIGKILL', stopped, reason: `its VM was killed after ${stop.graceMs} ms grace` }
  if (panic !== undefined) return { exitCode: null, signal: null, stopped, reason: `its guest kernel panicked: ${panic}` }
  return { exitCode: null, signal: null, stopped, reason: 'its VM ended without reporting an exit status' }
}

function signalName (n: number): string | null {
  for (const [name, num] of Object.entries(osConstants.signals)) if (num === n) return name
  return null
}

async function sizeOf (p: string): Promise<number> {
  try { return (await stat(p)).size } catch { return 0 }
}

/** True once `check` is; false at the deadline or when `ended` resolves first. Backs off to POLL_MAX_MS. */
async function untilTrue (check: () => Promise<boolean>, ms: number, ended?: Promise<void>): Promise<boolean> {
  const deadline = Date.now() + ms
  let period = 5
  let over = false
  ended?.then(() => { over = true }, () => {})
  for (;;) {
    if (await check()) return true
    const left = deadline - Date.now()
    if (left <= 0 || over) return await check()
    await Promise.race([sleep(Math.min(period, left)), ...(ended !== undefined ? [ended] : [])])
    period = Math.min(period * 2, POLL_MAX_MS)
  }
}

async function findOnPath (cmd: string): Promise<string | undefined> {
  const candidates = cmd.includes('/') ? [cmd] : (process.env.PATH ?? '/usr/bin:/bin').split(delimiter).map(d => join(d, cmd))
  for (const c of candidates) {
    try { await access(c, fsConstants.X_OK); return c } catch { /* not this one */ }
  }
  return undefined
}

/** Whole-file JSON written atomically (temp + rename): a crash never leaves half an entry. */
async function writeJson (path: string, value: unknown): Promise<void> {
  const tmp = `${path}.tmp`
  await writeFile(tmp, JSON.stringify(value), { mode: 0o600 })
  await rename(tmp, path)
}
