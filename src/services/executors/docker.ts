import { createHash } from 'node:crypto'
import { Agent, get as httpGet, type IncomingMessage } from 'node:http'
import { constants as osConstants } from 'node:os'
import { isAbsolute, join, posix } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type Docker from 'dockerode'
import { BadRequest, Conflict, DmsError, ExecutorUnavailable, InvalidConfig, InvalidState, NotFound, NotRunning, PortUnavailable, Timeout } from '../../lib/errors.js'
import type { Logger } from '../../lib/log.js'
import {
  COMMAND_CACHE_SIZE, COMMAND_LOOKUP_TIMEOUT_MS, DEFAULT_CONTAINER_PATH, DEFAULT_DOCKER_HOST, DEFAULT_HOST_IP, EXEC_MAX_OUTPUT_BYTES, LABEL_ALLOCATION, LABEL_DIR, LABEL_NODE, LABEL_STDERR,
  LABEL_STDOUT, LIST_INSPECT_CONCURRENCY, LOG_DRAIN_TIMEOUT_MS, LOG_STATE_FILE, MIN_MEMORY_BYTES, NAME_ID_CHARS, PROBE_TIMEOUT_MS, REQUEST_TIMEOUT_MS
} from './docker/constants.js'
import { createFrameParser, createLogFollower, type LogFollower } from './docker/logs.js'
import type { ExecResult, Executor, ExitInfo, Probe, WorkloadRef, WorkloadSpec } from './types.js'

/**
 * The `docker` executor: one container per allocation, through the Docker Engine API (Docker,
 * or podman's compatible service) with `dockerode`.
 *
 * - Every container carries the labels `dms.node=<nodeId>` and `dms.allocation=<id>`: `list()`
 *   filters on the node's label, so several daemons on one engine never see each other's
 *   containers, and a restarted daemon finds its own (recovery by labels).
 * - Limits: `HostConfig.NanoCpus` (a CFS quota) and `Memory` with `MemorySwap` equal to it (no
 *   swap beyond the limit), so `WorkloadRef.limits` is `docker`.
 * - Ports: `PortBindings` from the leases, on `hostIp` (default 0.0.0.0: peers reach workloads).
 * - An init process is PID 1 (`HostConfig.Init`) so SIGTERM reaches the workload (a bare PID 1
 *   ignores it and every stop would wait out its grace) and zombies are reaped.
 * - Images are never pulled: no registry is reachable from these machines, and a pull would
 *   hang a start. A missing image is a `BadRequest` at once.
 * - Output: a log follower appends the container's stdout and stderr to the spec's files and
 *   re-attaches after a daemon restart without loss (docker/logs.ts).
 */
export interface DockerExecutorInit {
  /** The node's id (its PeerId): the value of the `dms.node` label. */
  nodeId: string
  /** `unix:///path`, `tcp://host:port` or `http://host:port`; default `DOCKER_HOST`, else the usual socket. */
  dockerHost?: string
  /** Host address published ports bind on (default 0.0.0.0; tests use 127.0.0.1). */
  hostIp?: string
  /** Run an init as PID 1 (default true; podman needs `catatonit`, Docker ships `docker-init`). */
  init?: boolean
}

export interface DockerExecutorComponents {
  log: Logger
}

/** What dockerode's errors carry: the HTTP status and the engine's JSON body, or a socket error code. */
interface EngineError { statusCode?: number, json?: unknown, code?: string, name?: string, message?: string }

const engineMessage = (err: unknown): string => {
  const e = err as EngineError
  const body = e.json as { message?: unknown } | undefined
  if (typeof body?.message === 'string') return body.message
  return String(e.message ?? err)
}
/**
 * Options with the `abortSignal` dockerode honours on every call (docker-modem turns it into the
 * request's signal) but its type declarations leave out of several option types.
 */
function bounded<T extends object> (opts: T, ms: number = REQUEST_TIMEOUT_MS): T & { abortSignal: AbortSignal } {
  return { ...opts, abortSignal: AbortSignal.timeout(ms) }
}

const statusOf = (err: unknown): number | undefined => (err as EngineError).statusCode
const isAbort = (err: unknown): boolean => {
  const name = (err as EngineError).name
  return name === 'AbortError' || name === 'TimeoutError'
}
/** The engine says the container is not running (Docker 409; podman 500 "container state improper"). */
const notRunning = (err: unknown): boolean => {
  const s = statusOf(err)
  return s === 409 || (s === 500 && /state improper|not running|is not running/i.test(engineMessage(err)))
}

export function parseDockerHost (host: string): { socketPath: string } | { host: string, port: number, protocol: 'http' } {
  let url: URL
  try {
    url = new URL(host)
  } catch {
    throw new InvalidConfig(`docker host ${host} is not a URL (unix:///path or tcp://host:port)`, { key: 'dockerHost', value: host })
  }
  if (url.protocol === 'unix:' && url.pathname !== '') return { socketPath: url.pathname }
  if ((url.protocol === 'tcp:' || url.protocol === 'http:') && url.hostname !== '') {
    return { host: url.hostname, port: url.port === '' ? 2375 : Number(url.port), protocol: 'http' }
  }
  throw new InvalidConfig(`docker host ${host}: only unix:// and tcp:// (plain HTTP) engines are supported`, { key: 'dockerHost', value: host })
}

/** A stable container name per node and allocation: readable, and unique however odd the id. */
export function containerName (nodeId: string, allocationId: string): string {
  const readable = allocationId.replace(/[^a-zA-Z0-9_.-]/g, '_').slice(0, NAME_ID_CHARS)
  const hash = createHash('sha256').update(nodeId).update('\0').update(allocationId).digest('hex').slice(0, 12)
  return `dms-${readable}-${hash}`
}

/** The signal a container's exit status stands for (128 + n, the shell's and runc's convention). */
function signalOf (code: number): string | null {
  if (code <= 128 || code > 128 + 64) return null
  const n = code - 128
  for (const [name, num] of Object.entries(osConstants.signals)) if (num === n) return name
  return null
}

interface StopRecord {
  graceMs: number
  /** SIGKILL was needed (the grace ran out). */
  killed: boolean
  /** A stop()'s SIGTERM reached the running container (then it was ended by stop, whichever call sent it). */
  signalled: boolean
}

/**
 * Commands found in an image, by image id, command and PATH (see checkCommand): shared by every
 * executor of the process, since an image never changes under its id.
 */
const commandsFound = new Set<string>()

/**
 * A just-started container's start time. podman can fail an inspect that races the container's
 * own exit (HTTP 500, "read /proc/<pid>/cgroup: no such process"): the container is there and has
 * just ended, so the inspect is tried again, at most INSPECT_TRIES times in all.
 */
const INSPECT_TRIES = 3
const INSPECT_RETRY_MS = 50
async function startTimeOf (container: Docker.Container): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      return (await container.inspect(bounded({}))).State.StartedAt
    } catch (err) {
      if (attempt >= INSPECT_TRIES || statusOf(err) !== 500) throw err
      await sleep(INSPECT_RETRY_MS)
    }
  }
}

/** GET /_ping on the engine: resolves on 200, rejects with the socket error or the status. */
async function ping (endpoint: ReturnType<typeof parseDockerHost>, agent: Agent, timeoutMs: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const req = httpGet({ ...endpoint, protocol: 'http:', path: '/_ping', agent, signal: AbortSignal.timeout(timeoutMs) }, (res) => {
      res.resume()
      if (res.statusCode === 200) resolve(); else reject(Object.assign(new Error(`the engine answered /_ping with HTTP ${res.statusCode}`), { statusCode: res.statusCode }))
    })
    req.on('error', reject)
  })
}

class DockerExecutor implements Executor {
  readonly name = 'docker' as const
  /** dockerode and its dependencies (~30 MB, ~0.2 s to load) load on first use, not at start. */
  private client?: Promise<Docker>
  private readonly endpoint: ReturnType<typeof parseDockerHost>
  private readonly agent = new Agent({ keepAlive: true })
  private readonly host: string
  private readonly nodeId: string
  private readonly hostIp: string
  private readonly useInit: boolean
  private readonly log: Logger
  private readonly followers = new Map<string, Promise<LogFollower | undefined>>()
  private readonly stops = new Map<string, StopRecord>()
  private readonly limitsOf = new Map<string, number>()
  private readonly pending = new Set<AbortController>()
  private closed = false

  constructor (init: DockerExecutorInit, components: DockerExecutorComponents) {
    if (typeof init.nodeId !== 'string' || init.nodeId === '') throw new InvalidConfig('the docker executor needs the node id', { key: 'nodeId' })
    this.nodeId = init.nodeId
    this.host = init.dockerHost ?? process.env.DOCKER_HOST ?? DEFAULT_DOCKER_HOST
    this.hostIp = init.hostIp ?? DEFAULT_HOST_IP
    this.useInit = init.init ?? true
    this.log = components.log
    this.endpoint = parseDockerHost(this.host)
  }

  /** The engine's client, created on first use (our own agent, so that close() can end its kept-alive sockets). */
  private async docker (): Promise<Docker> {
    // (dockerode passes `agent` on to its modem; its declarations do not list it)
    const options: Docker.DockerOptions & { agent: Agent } = { ...this.endpoint, agent: this.agent }
    this.client ??= import('dockerode').then(m => new m.default(options))
    return await this.client
  }

  async probe (): Promise<Probe> {
    try {
      // only /_ping: podman answers /version in ~4 s here (it asks its runtime and conmon). A bare
      // request, so that a node with no engine never loads the client library.
      await ping(this.endpoint, this.agent, PROBE_TIMEOUT_MS)
      return { available: true, detail: `docker engine at ${this.host}` }
    } catch (err) {
      const why = isAbort(err) ? `no answer within ${PROBE_TIMEOUT_MS} ms` : ((err as EngineError).code ?? engineMessage(err))
      return { available: false, reason: `no docker engine answers at ${this.host} (${why})` }
    }
  }

  async start (spec: WorkloadSpec): Promise<WorkloadRef> {
    if (this.closed) throw new NotRunning('the docker executor is closed')
    const image = this.validate(spec)
    let imageInfo: Docker.ImageInspectInfo
    try {
      imageInfo = await (await this.docker()).getImage(image).inspect(bounded<Docker.ImageInspectOptions>({}))
    } catch (err) {
      if (statusOf(err) === 404) {
        throw new BadRequest(`image ${image} is not on this node's docker engine, and images are never pulled: load or build it there first`, { field: 'image', image })
      }
      throw this.failure(err, 'inspect the image')
    }

    const name = containerName(this.nodeId, spec.allocationId)
    const exposed: Record<string, Record<string, never>> = {}
    const bindings: Record<string, Array<{ HostIp: string, HostPort: string }>> = {}
    for (const p of spec.ports) {
      const key = `${p.container}/${p.protocol}`
      exposed[key] = {}
      ;(bindings[key] ??= []).push({ HostIp: this.hostIp, HostPort: String(p.host) })
    }
    const body: Docker.ContainerCreateOptions = {
      name,
      Image: image,
      Cmd: spec.command.length > 0 ? spec.command : undefined,
      Entrypoint: spec.entrypoint,
      Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
      WorkingDir: spec.workingDir,
      Labels: {
        [LABEL_NODE]: this.nodeId,
        [LABEL_ALLOCATION]: spec.allocationId,
        [LABEL_STDOUT]: spec.stdoutPath,
        [LABEL_STDERR]: spec.stderrPath,
        [LABEL_DIR]: spec.dir
      },
      ExposedPorts: exposed,
      Tty: false,
      OpenStdin: false,
      HostConfig: {
        NanoCpus: spec.limits.cpuCores > 0 ? Math.round(spec.limits.cpuCores * 1e9) : undefined,
        Memory: spec.limits.ramBytes > 0 ? spec.limits.ramBytes : undefined,
        MemorySwap: spec.limits.ramBytes > 0 ? spec.limits.ramBytes : undefined,
        PortBindings: bindings,
        Init: this.useInit,
        RestartPolicy: { Name: 'no' } // the supervisor restarts, by its policy; the engine must not
      }
    }

    const container = await this.create(body, spec.allocationId)
    try {
      await this.checkCommand(container, spec, imageInfo)
    } catch (err) {
      await this.discard(container.id)
      throw err
    }
    try {
      await container.start(bounded({}))
    } catch (err) {
      await this.discard(container.id)
      throw this.startFailure(err, spec)
    }
    this.limitsOf.set(container.id, spec.limits.ramBytes)
    this.followers.set(container.id, Promise.resolve(this.follow(container.id, spec.stdoutPath, spec.stderrPath, spec.dir)))
    let startedAt: string
    try {
      startedAt = await startTimeOf(container)
    } catch (err) {
      void this.followers.get(container.id)?.then(f => { f?.close() })
      this.followers.delete(container.id)
      await this.discard(container.id)
      throw this.failure(err, 'inspect the started container')
    }
    this.log.debug({ allocationId: spec.allocationId, container: container.id, image }, 'docker workload started')
    return { executor: 'docker', allocationId: spec.allocationId, id: container.id, startTime: startedAt, limits: 'docker' }
  }

  async wait (ref: WorkloadRef, opts: { signal?: AbortSignal } = {}): Promise<ExitInfo> {
    if (this.closed) throw new NotRunning('the docker executor is closed')
    opts.signal?.throwIfAborted()
    const ac = new AbortController()
    const onAbort = (): void => { ac.abort(opts.signal?.reason) }
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    this.pending.add(ac)
    try {
      const follower = await this.followerOf(ref.id)
      const container = (await this.docker()).getContainer(ref.id)
      let status: number
      try {
        status = (await container.wait({ condition: 'not-running', abortSignal: ac.signal }) as { StatusCode: number }).StatusCode
      } catch (err) {
        if (ac.signal.aborted) throw ac.signal.reason
        if (statusOf(err) === 404) return this.gone(ref)
        throw this.failure(err, 'wait for the container')
      }
      let oom = false
      try {
        oom = (await container.inspect(bounded({}))).State.OOMKilled
      } catch (err) {
        if (statusOf(err) !== 404) this.log.debug({ err, container: ref.id }, 'docker inspect after exit failed')
      }
      if (follower !== undefined) await this.drain(follower, ac.signal)
      if (ac.signal.aborted) throw ac.signal.reason
      return this.exitInfo(ref.id, status, oom)
    } finally {
      opts.signal?.removeEventListener('abort', onAbort)
      this.pending.delete(ac)
    }
  }

  async stop (ref: WorkloadRef, graceMs: number): Promise<void> {
    const container = (await this.docker()).getContainer(ref.id)
    // recorded before the signal, so that a wait() that sees the end already knows who ended it
    const earlier = this.stops.get(ref.id)
    const record: StopRecord = earlier ?? { graceMs, killed: false, signalled: false }
    this.stops.set(ref.id, record)
    try {
      await container.kill(bounded({ signal: 'SIGTERM' }))
      record.signalled = true
      this.stops.set(ref.id, record) // again: a concurrent stop whose signal came too late may have dropped it
    } catch (err) {
      if (statusOf(err) === 404 || notRunning(err)) {
        // it had ended already: by a concurrent or earlier stop(), or by itself (then not "stopped")
        if (!record.signalled) this.stops.delete(ref.id)
        return
      }
      throw this.failure(err, 'stop the container')
    }
    if (await this.ended(container, Math.max(0, graceMs))) return
    record.killed = true
    try {
      await container.kill(bounded({ signal: 'SIGKILL' }))
    } catch (err) {
      if (statusOf(err) === 404 || notRunning(err)) return
      throw this.failure(err, 'kill the container')
    }
    if (!(await this.ended(container, REQUEST_TIMEOUT_MS))) {
      throw new ExecutorUnavailable(`container ${ref.id} still runs ${REQUEST_TIMEOUT_MS} ms after SIGKILL`, { container: ref.id })
    }
  }

  async exec (ref: WorkloadRef, argv: string[], opts: { timeoutMs: number }): Promise<ExecResult> {
    if (!Array.isArray(argv) || argv.length === 0 || argv.some(a => typeof a !== 'string' || a.includes('\0'))) {
      throw new BadRequest('exec needs a command: a non-empty list of strings', { field: 'command' })
    }
    const container = (await this.docker()).getContainer(ref.id)
    const deadline = AbortSignal.timeout(Math.max(1, opts.timeoutMs))
    let exec: Docker.Exec
    let stream: NodeJS.ReadWriteStream
    try {
      exec = await container.exec({ Cmd: argv, AttachStdout: true, AttachStderr: true, AttachStdin: false, Tty: false, abortSignal: deadline })
      stream = await exec.start({ hijack: true, stdin: false, abortSignal: deadline })
    } catch (err) {
      if (deadline.aborted) throw new Timeout(`exec did not finish within ${opts.timeoutMs} ms`, { timeoutMs: opts.timeoutMs })
      if (statusOf(err) === 404) throw new NotFound(`container ${ref.id} does not exist`, { container: ref.id })
      if (notRunning(err)) throw new InvalidState(`container ${ref.id} is not running`, { container: ref.id })
      throw this.failure(err, 'exec in the container')
    }
    const out = collector()
    const errOut = collector()
    const parser = createFrameParser({ timestamps: false })
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        stream.removeAllListeners('data')
        ;(stream as NodeJS.ReadWriteStream & { destroy: () => void }).destroy()
        reject(new Timeout(`exec did not finish within ${opts.timeoutMs} ms`, { timeoutMs: opts.timeoutMs }))
      }
      deadline.addEventListener('abort', onAbort, { once: true })
      stream.on('data', (chunk: Buffer) => {
        for (const f of parser.push(chunk)) (f.stream === 'stderr' ? errOut : out).add(f.data)
      })
      const finish = (): void => { deadline.removeEventListener('abort', onAbort); resolve() }
      stream.once('end', finish)
      stream.once('close', finish)
      stream.once('error', err => { deadline.removeEventListener('abort', onAbort); reject(this.failure(err, 'read the exec output')) })
    })
    const exitCode = await this.execExit(exec, deadline, opts.timeoutMs)
    return { exitCode, stdout: out.text(), stderr: errOut.text() }
  }

  async stats (ref: WorkloadRef): Promise<{ cpuSeconds?: number, memoryBytes?: number }> {
    const container = (await this.docker()).getContainer(ref.id)
    let s: Docker.ContainerStats
    try {
      s = await container.stats(bounded({ stream: false as const, 'one-shot': true }))
    } catch (err) {
      if (statusOf(err) === 404) throw new NotFound(`container ${ref.id} does not exist`, { container: ref.id })
      if (notRunning(err)) return {}
      throw this.failure(err, 'read the container stats')
    }
    const out: { cpuSeconds?: number, memoryBytes?: number } = {}
    const cpu = s.cpu_stats?.cpu_usage?.total_usage
    if (typeof cpu === 'number' && cpu > 0) out.cpuSeconds = cpu / 1e9
    const mem = s.memory_stats?.usage
    if (typeof mem === 'number' && mem > 0) {
      // as `docker stats` shows it: the page cache the kernel can drop does not count
      const cache = (s.memory_stats.stats as Record<string, number> | undefined)?.inactive_file ?? (s.memory_stats.stats as Record<string, number> | undefined)?.cache ?? 0
      out.memoryBytes = Math.max(0, mem - cache)
    }
    return out
  }

  async alive (ref: WorkloadRef): Promise<boolean> {
    try {
      const info = await (await this.docker()).getContainer(ref.id).inspect(bounded({}))
      return info.State.Running && info.State.StartedAt === ref.startTime && info.Config.Labels?.[LABEL_NODE] === this.nodeId
    } catch (err) {
      if (statusOf(err) === 404) return false
      throw this.failure(err, 'inspect the container')
    }
  }

  async list (): Promise<WorkloadRef[]> {
    let found: Docker.ContainerInfo[]
    try {
      found = await (await this.docker()).listContainers(bounded<Docker.ContainerListOptions>({ all: true, filters: JSON.stringify({ label: [`${LABEL_NODE}=${this.nodeId}`] }) }))
    } catch (err) {
      throw this.failure(err, 'list containers')
    }
    // the filter is the engine's; the check is ours (a misbehaving engine must not make us stop a stranger)
    const ours = found.filter(c => c.Labels?.[LABEL_NODE] === this.nodeId)
    // the list has no start times: one inspect each, a few at a time
    const refs: Array<WorkloadRef | undefined> = []
    for (let i = 0; i < ours.length; i += LIST_INSPECT_CONCURRENCY) {
      refs.push(...await Promise.all(ours.slice(i, i + LIST_INSPECT_CONCURRENCY).map(async (c): Promise<WorkloadRef | undefined> => {
        let startedAt: string
        try {
          startedAt = (await (await this.docker()).getContainer(c.Id).inspect(bounded({}))).State.StartedAt
        } catch (err) {
          if (statusOf(err) === 404) return undefined // removed meanwhile
          throw this.failure(err, 'inspect a listed container')
        }
        return { executor: 'docker', allocationId: c.Labels[LABEL_ALLOCATION] ?? '', id: c.Id, startTime: startedAt, limits: 'docker' }
      })))
    }
    return refs.filter((r): r is WorkloadRef => r !== undefined)
  }

  async remove (ref: WorkloadRef): Promise<void> {
    const follower = this.followers.get(ref.id)
    this.followers.delete(ref.id)
    this.stops.delete(ref.id)
    this.limitsOf.delete(ref.id)
    void follower?.then(f => { f?.close() })
    try {
      await (await this.docker()).getContainer(ref.id).remove(bounded({ force: true, v: true }))
    } catch (err) {
      // gone already, or being removed by a concurrent call: either way nothing is left
      if (statusOf(err) === 404 || (statusOf(err) === 409 && /in progress/i.test(engineMessage(err)))) return
      throw this.failure(err, 'remove the container')
    }
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const ac of this.pending) ac.abort(new NotRunning('the docker executor is closed'))
    this.pending.clear()
    const followers = [...this.followers.values()]
    this.followers.clear()
    for (const f of await Promise.all(followers)) f?.close()
    this.agent.destroy()
  }

  // ---- internals ----

  /** Refuses a spec the engine cannot run, naming the field; returns the image. */
  private validate (spec: WorkloadSpec): string {
    if (typeof spec.image !== 'string' || spec.image.trim() === '') throw new BadRequest('the docker executor needs an image', { field: 'image' })
    const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every(a => typeof a === 'string' && !a.includes('\0'))
    if (!strings(spec.command)) throw new BadRequest('command must be a list of strings', { field: 'command' })
    if (spec.entrypoint !== undefined && !strings(spec.entrypoint)) throw new BadRequest('entrypoint must be a list of strings', { field: 'entrypoint' })
    for (const [k, v] of Object.entries(spec.env)) {
      if (k === '' || k.includes('=') || k.includes('\0') || typeof v !== 'string' || v.includes('\0')) {
        throw new BadRequest(`environment variable ${JSON.stringify(k)} is not NAME=value`, { field: 'env', name: k })
      }
    }
    if (spec.workingDir !== undefined && !isAbsolute(spec.workingDir)) {
      throw new BadRequest(`workingDir ${spec.workingDir} must be an absolute path inside the container`, { field: 'workingDir' })
    }
    const { cpuCores, ramBytes } = spec.limits
    if (!Number.isFinite(cpuCores) || cpuCores < 0) throw new BadRequest(`cpuCores ${cpuCores} is not a non-negative number`, { field: 'limits.cpuCores', cpuCores })
    if (!Number.isInteger(ramBytes) || ramBytes < 0 || (ramBytes > 0 && ramBytes < MIN_MEMORY_BYTES)) {
      throw new BadRequest(`ramBytes ${ramBytes}: docker needs at least ${MIN_MEMORY_BYTES} bytes (or 0 for no limit)`, { field: 'limits.ramBytes', ramBytes, min: MIN_MEMORY_BYTES })
    }
    for (const p of spec.ports) {
      const ok = (n: number): boolean => Number.isInteger(n) && n >= 1 && n <= 65535
      if (!ok(p.host) || !ok(p.container) || (p.protocol !== 'tcp' && p.protocol !== 'udp')) {
        throw new BadRequest(`port binding ${p.host}->${p.container}/${p.protocol} is not valid`, { field: 'ports', host: p.host, container: p.container })
      }
    }
    return spec.image
  }

  /**
   * Creates the container. A container of the same name that is this node's and this
   * allocation's and not running (left by an earlier run of it) is removed first; a running
   * one is a `Conflict`.
   */
  private async create (body: Docker.ContainerCreateOptions, allocationId: string): Promise<Docker.Container> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await (await this.docker()).createContainer(bounded(body))
      } catch (err) {
        // Docker says 409; podman 500 "name ... is already in use"
        const taken = statusOf(err) === 409 || (statusOf(err) === 500 && /already in use/i.test(engineMessage(err)))
        if (taken && attempt === 0) {
          const old = await (await this.docker()).getContainer(body.name ?? '').inspect().catch(() => undefined)
          if (old !== undefined && !old.State.Running && old.Config.Labels?.[LABEL_NODE] === this.nodeId && old.Config.Labels?.[LABEL_ALLOCATION] === allocationId) {
            await this.discard(old.Id)
            continue
          }
          throw new Conflict(`a running container already holds the name ${String(body.name)}`, { allocationId, container: old?.Id })
        }
        if (statusOf(err) === 400) throw new BadRequest(`the engine refused the container: ${engineMessage(err)}`, { field: 'spec', reason: engineMessage(err) })
        if (statusOf(err) === 500 && /cpu|memory/i.test(engineMessage(err))) {
          throw new BadRequest(`the engine refused the limits: ${engineMessage(err)}`, { field: 'limits', reason: engineMessage(err) })
        }
        throw this.failure(err, 'create the container')
      }
    }
  }

  /**
   * Refuses a command the image does not have, before the container starts. With an init as
   * PID 1 the engine cannot: the init starts, and only its exec of the command fails, as an
   * exit status moments later. So the executable is looked up the way the runtime will, in the
   * created container's filesystem (HEAD /containers/{id}/archive: one stat per PATH entry, in
   * parallel). Podman answers such a stat in ~0.4 s (it mounts the container), so a command
   * found once is remembered per image id, PATH and working directory: images do not change.
   */
  private async checkCommand (container: Docker.Container, spec: WorkloadSpec, image: Docker.ImageInspectInfo): Promise<void> {
    const configured = (v: string | string[] | undefined | null): string[] => v === undefined || v === null ? [] : (Array.isArray(v) ? v : [v])
    const entry = spec.entrypoint ?? configured(image.Config?.Entrypoint)
    // as the engine does: an entrypoint given in the spec drops the image's CMD
    const cmd = spec.command.length > 0 ? spec.command : (spec.entrypoint !== undefined ? [] : configured(image.Config?.Cmd))
    const argv0 = [...entry, ...cmd][0]
    if (argv0 === undefined || argv0 === '') {
      throw new BadRequest(`nothing to run: the spec has no command and image ${String(spec.image)} names none`, { field: 'command', command: null })
    }
    const imagePath = image.Config?.Env?.find(e => e.startsWith('PATH='))?.slice(5)
    const path = spec.env.PATH ?? imagePath ?? DEFAULT_CONTAINER_PATH
    const cwd = spec.workingDir ?? (image.Config?.WorkingDir !== undefined && image.Config.WorkingDir !== '' ? image.Config.WorkingDir : '/')
    const key = `${image.Id}\0${argv0}\0${argv0.includes('/') ? cwd : path}`
    if (commandsFound.has(key)) return
    const candidates = argv0.includes('/') ? [posix.resolve(cwd, argv0)] : path.split(':').filter(d => d !== '').map(d => posix.join(posix.resolve(cwd, d), argv0))
    // The whole look-up is bounded: it is a courtesy (an early, clear refusal), so an engine
    // too slow to answer it does not fail a start; the runtime then has the last word.
    const bound = AbortSignal.timeout(COMMAND_LOOKUP_TIMEOUT_MS)
    let found: boolean[]
    try {
      found = await Promise.all(candidates.map(async p => await this.executableAt(container, p, bound)))
    } catch (err) {
      if (bound.aborted) {
        this.log.warn({ command: argv0, image: spec.image }, `looking the command up took over ${COMMAND_LOOKUP_TIMEOUT_MS} ms: starting without the check`)
        return
      }
      throw err
    }
    if (!found.includes(true)) {
      throw new BadRequest(`command ${JSON.stringify(argv0)} is not an executable in image ${String(spec.image)}${argv0.includes('/') ? '' : ` (PATH ${path})`}`, { field: 'command', command: argv0 })
    }
    if (commandsFound.size >= COMMAND_CACHE_SIZE) commandsFound.clear()
    commandsFound.add(key)
  }

  /** Whether `path` in the container's filesystem is an executable file (a symlink counts: its target is not followed). */
  private async executableAt (container: Docker.Container, path: string, signal: AbortSignal): Promise<boolean> {
    let res: IncomingMessage
    try {
      res = await container.infoArchive({ path, abortSignal: signal }) as IncomingMessage
    } catch (err) {
      if (signal.aborted) throw err
      if (statusOf(err) === 404) return false
      throw this.failure(err, 'look up the command in the container')
    }
    res.resume()
    const header = res.headers['x-docker-container-path-stat']
    if (typeof header !== 'string') return true // an engine that does not say: let the runtime decide
    try {
      const stat = JSON.parse(Buffer.from(header, 'base64').toString('utf8')) as { mode?: number }
      const mode = stat.mode ?? 0
      // Go's os.FileMode: bit 31 a directory, bit 27 a symlink; the low 9 bits the permissions
      if (Math.floor(mode / 2 ** 31) % 2 === 1) return false
      if (Math.floor(mode / 2 ** 27) % 2 === 1) return true
      return (mode & 0o111) !== 0
    } catch {
      return true
    }
  }

  /** What a failed `start` means for the caller. */
  private startFailure (err: unknown, spec: WorkloadSpec): DmsError {
    const msg = engineMessage(err)
    if (/address already in use|port is already allocated/i.test(msg)) {
      const m = /:(\d{1,5})\b[^:]*(?:address already in use|already allocated)/i.exec(msg)
      const port = m !== null ? Number(m[1]) : spec.ports[0]?.host
      return new PortUnavailable(`port ${String(port)} is in use on this host`, { port, reason: msg })
    }
    if (/executable file not found|no such file or directory|permission denied|exec format error|not found/i.test(msg)) {
      const argv0 = spec.entrypoint?.[0] ?? spec.command[0]
      return new BadRequest(`command ${JSON.stringify(argv0 ?? '')} cannot be run in image ${String(spec.image)}: ${msg}`, { field: 'command', command: argv0 ?? null })
    }
    return this.failure(err, 'start the container')
  }

  /** An engine failure as a typed error: unreachable or misbehaving engines are `ExecutorUnavailable`. */
  private failure (err: unknown, op: string): DmsError {
    if (err instanceof DmsError) return err
    if (isAbort(err)) return new ExecutorUnavailable(`docker engine at ${this.host} did not ${op} within ${REQUEST_TIMEOUT_MS} ms`, { op, host: this.host })
    const status = statusOf(err)
    if (status === undefined) {
      return new ExecutorUnavailable(`docker engine at ${this.host} is unreachable (${(err as EngineError).code ?? engineMessage(err)})`, { op, host: this.host })
    }
    return new ExecutorUnavailable(`docker engine could not ${op}: ${engineMessage(err)}`, { op, status, host: this.host })
  }

  /** Removes a container that must not stay (a failed start); failures are logged, not thrown. */
  private async discard (id: string): Promise<void> {
    try {
      await (await this.docker()).getContainer(id).remove(bounded({ force: true, v: true }))
    } catch (err) {
      if (statusOf(err) !== 404) this.log.warn({ err, container: id }, 'could not remove a container that failed to start')
    }
  }

  private follow (id: string, stdoutPath: string, stderrPath: string, dir: string): LogFollower {
    const container = async (): Promise<Docker.Container> => (await this.docker()).getContainer(id)
    return createLogFollower({
      id,
      stdoutPath,
      stderrPath,
      statePath: join(dir, LOG_STATE_FILE),
      log: this.log,
      // `since` only when there is one: an empty value is a 400 from podman
      open: async (since, follow) => follow
        ? await (await container()).logs({ follow: true, stdout: true, stderr: true, timestamps: true, ...(since !== undefined ? { since } : {}) })
        : await (await container()).logs({ follow: false, stdout: true, stderr: true, timestamps: true, ...(since !== undefined ? { since } : {}) })
    })
  }

  /** The log follower of a container; for a re-adopted one, re-attached from its labels. */
  private async followerOf (id: string): Promise<LogFollower | undefined> {
    let f = this.followers.get(id)
    if (f === undefined) {
      f = (async () => {
        try {
          const labels = (await (await this.docker()).getContainer(id).inspect(bounded({}))).Config.Labels ?? {}
          const out = labels[LABEL_STDOUT]
          const err = labels[LABEL_STDERR]
          const dir = labels[LABEL_DIR]
          if (out === undefined || err === undefined || dir === undefined) {
            this.log.warn({ container: id }, 'container has no dms log labels: its output is not followed')
            return undefined
          }
          return this.follow(id, out, err, dir)
        } catch (err) {
          if (statusOf(err) !== 404) this.log.warn({ err, container: id }, 'could not re-attach to the container\'s log')
          return undefined
        }
      })()
      this.followers.set(id, f)
    }
    return await f
  }

  /** Waits for the follower to write the rest of the output, bounded. */
  private async drain (follower: LogFollower, signal: AbortSignal): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const bound = new Promise<void>(resolve => {
      timer = setTimeout(() => {
        this.log.warn('docker log stream did not end after the container exited; output may be incomplete')
        resolve()
      }, LOG_DRAIN_TIMEOUT_MS)
      signal.addEventListener('abort', () => { resolve() }, { once: true })
    })
    await Promise.race([follower.done, bound])
    clearTimeout(timer)
  }

  /** Whether the container stopped running within `ms`. */
  private async ended (container: Docker.Container, ms: number): Promise<boolean> {
    try {
      await container.wait({ condition: 'not-running', abortSignal: AbortSignal.timeout(Math.max(1, ms)) })
      return true
    } catch (err) {
      if (statusOf(err) === 404) return true
      if (isAbort(err)) return false
      throw this.failure(err, 'wait for the container')
    }
  }

  /** The exec's exit code; the engine may take a moment to record it after the stream ended. */
  private async execExit (exec: Docker.Exec, deadline: AbortSignal, timeoutMs: number): Promise<number> {
    for (let i = 0; i < 100; i++) {
      let info: Docker.ExecInspectInfo
      try {
        info = await exec.inspect({ abortSignal: deadline })
      } catch (err) {
        if (deadline.aborted) throw new Timeout(`exec did not finish within ${timeoutMs} ms`, { timeoutMs })
        throw this.failure(err, 'inspect the exec')
      }
      if (!info.Running && typeof info.ExitCode === 'number') return info.ExitCode
      await new Promise(resolve => setTimeout(resolve, 10))
    }
    throw new ExecutorUnavailable('the engine did not report the exec\'s exit code', { op: 'inspect the exec' })
  }

  private exitInfo (id: string, status: number, oom: boolean): ExitInfo {
    const stop = this.stops.get(id)
    const signal = signalOf(status)
    let reason: string
    if (oom) reason = `killed: out of memory (limit ${String(this.limitsOf.get(id) ?? 'unknown')} bytes)`
    else if (stop?.killed === true) reason = `killed by SIGKILL after ${stop.graceMs} ms grace`
    else if (stop !== undefined) reason = signal !== null ? `stopped by ${signal}` : `stopped (exit ${status})`
    else reason = signal !== null ? `killed by ${signal}` : `exit ${status}`
    return { exitCode: signal !== null ? null : status, signal, stopped: stop !== undefined, reason }
  }

  private gone (ref: WorkloadRef): ExitInfo {
    return { exitCode: null, signal: null, stopped: this.stops.has(ref.id), reason: `container ${ref.id.slice(0, 12)} no longer exists` }
  }
}

/** Keeps up to EXEC_MAX_OUTPUT_BYTES of one exec stream. */
function collector (): { add: (b: Buffer) => void, text: () => string } {
  const parts: Buffer[] = []
  let size = 0
  let dropped = 0
  return {
    add (b: Buffer) {
      const room = EXEC_MAX_OUTPUT_BYTES - size
      if (room <= 0) { dropped += b.length; return }
      const keep = b.length <= room ? b : b.subarray(0, room)
      parts.push(keep)
      size += keep.length
      dropped += b.length - keep.length
    },
    text: () => Buffer.concat(parts).toString('utf8') + (dropped > 0 ? `\n[${dropped} bytes more not kept]` : '')
  }
}

export function createDockerExecutor (init: DockerExecutorInit, components: DockerExecutorComponents): Executor {
  return new DockerExecutor(init, components)
}
