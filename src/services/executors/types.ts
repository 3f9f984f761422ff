/**
 * The executor contract: what runs one allocation's workload on this machine. Every executor
 * (`process`, `docker`, `vm`) implements it and passes the one contract suite
 * (`test/services/executors/contract.ts`). The allocation supervisor drives it; it never knows
 * which executor it talks to.
 *
 * An executor is stateless across restarts of the daemon except for what it can find again on
 * the machine: a `WorkloadRef` (persisted by the caller in the allocation record) must be enough
 * to re-adopt a workload, and `list()` must find every workload this node started, so that the
 * supervisor can stop the ones no record claims (orphans of a `kill -9` between start and record).
 */
/** Every executor dms knows, in the order they are offered: the one list specs, schemas and the CLI take names from. */
export const EXECUTOR_NAMES = ['process', 'docker', 'vm'] as const
export type ExecutorName = typeof EXECUTOR_NAMES[number]

export interface PortBinding {
  /** Port on the host, leased by the port allocator. */
  host: number
  /** Port inside the workload (docker: the container port; process: equals `host`). */
  container: number
  protocol: 'tcp' | 'udp'
}

export interface WorkloadLimits {
  /** CPU cores (fractional allowed): a quota, not a pinning. */
  cpuCores: number
  ramBytes: number
}

export interface GuestSpec {
  kernel?: string
  initrd?: string
  rootfs?: string
  bootArgs?: string
}

export interface WorkloadSpec {
  /** Names the workload on the executor (container name, labels, cgroup, registry file). */
  allocationId: string
  /** process: argv (argv[0] looked up on the spec's PATH, no shell); docker: the container's Cmd. */
  command: string[]
  /** docker only: overrides the image's entrypoint. */
  entrypoint?: string[]
  /** docker: required; process: refused. */
  image?: string
  /** The whole environment of the workload; the caller builds it clean (nothing of the daemon's). */
  env: Record<string, string>
  /** process: the cwd (default `<dir>/work`, created); docker: WorkingDir. */
  workingDir?: string
  limits: WorkloadLimits
  ports: PortBinding[]
  /** vm only: the caller's own guest files and kernel arguments (default: the node's guest). */
  guest?: GuestSpec
  /** The allocation's own directory (exists); the executor may keep files in it. */
  dir: string
  /** Files stdout and stderr are appended to (in `dir`); the supervisor rotates them. */
  stdoutPath: string
  stderrPath: string
}

/** A started workload, as persisted in the allocation record: enough to find it again. */
export interface WorkloadRef {
  executor: ExecutorName
  allocationId: string
  /** process: the pid (= its process group id); docker: the container id; vm: QEMU's pid. */
  id: string
  /**
   * process: the start time of the pid (`/proc/<pid>/stat` field 22, clock ticks since boot),
   * so a recycled pid is never taken for the workload. docker: the container's start time.
   */
  startTime: string
  /**
   * Which limits are enforced: `cgroup-v2`, `cgroup-v1`, `rlimit` (memory as RLIMIT_AS only, no
   * CPU quota), `docker`, `none`, `vm-kvm` / `vm-tcg` (the VM's vCPUs and memory, and how it runs).
   */
  limits: string
}

export interface ExitInfo {
  /** null when it ended by a signal, or when the exit status could not be learned. */
  exitCode: number | null
  signal: string | null
  /** Ended by `stop()`. */
  stopped: boolean
  /** How it ended, in words a person reads (`exit 1`, `killed by SIGKILL after 5 s grace`, …). */
  reason: string
}

export interface ExecResult { exitCode: number, stdout: string, stderr: string }

export type Probe = { available: true, detail: string } | { available: false, reason: string }

export interface Executor {
  readonly name: ExecutorName
  /** Whether it works on this machine (docker: the engine answers). Never throws. */
  probe: () => Promise<Probe>
  /**
   * Starts the workload and resolves once it runs. Throws typed errors at once, leaving nothing
   * behind: `BadRequest` (the command does not exist, an image is missing, an unknown field),
   * `PortUnavailable`, `ExecutorUnavailable` when the executor does not work here.
   */
  start: (spec: WorkloadSpec) => Promise<WorkloadRef>
  /**
   * Resolves when the workload ends, for one this process started and for a re-adopted one.
   * Once it resolved, everything the workload wrote is in `stdoutPath`/`stderrPath`. `signal`
   * abandons the wait (rejects with the signal's reason) and frees what it held (a poll timer, an
   * HTTP request to the engine) without touching the workload.
   */
  wait: (ref: WorkloadRef, opts?: { signal?: AbortSignal }) => Promise<ExitInfo>
  /**
   * Ends the workload: SIGTERM to the whole process group (docker: stop), SIGKILL after `graceMs`.
   * Resolves once nothing of it runs. Idempotent: stopping an ended workload resolves.
   */
  stop: (ref: WorkloadRef, graceMs: number) => Promise<void>
  /** Runs a command in the workload's context (process: its cwd and env; docker: exec). */
  exec: (ref: WorkloadRef, argv: string[], opts: { timeoutMs: number }) => Promise<ExecResult>
  stats: (ref: WorkloadRef) => Promise<{ cpuSeconds?: number, memoryBytes?: number }>
  /** True when the ref still names the same running workload (pid and start time; container). */
  alive: (ref: WorkloadRef) => Promise<boolean>
  /** Every workload this executor runs or keeps for this node (and for no other node). */
  list: () => Promise<WorkloadRef[]>
  /** Frees what is left of an ended workload (container, cgroup, registry entry). Idempotent. */
  remove: (ref: WorkloadRef) => Promise<void>
  /**
   * Lets go of what this instance holds (pending waits, log followers, watchers, sockets) and
   * leaves every workload running, as a daemon that shuts down does: the next instance re-adopts
   * them. Pending `wait`s reject. Idempotent.
   */
  close: () => Promise<void>
}
