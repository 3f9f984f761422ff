import { join } from 'node:path'
import { BadRequest, ExecutorUnavailable, InvalidConfig } from '../../lib/errors.js'
import type { Logger } from '../../lib/log.js'
import { createDockerExecutor, type DockerExecutorInit } from './docker.js'
import { createProcessExecutor, type ProcessExecutorInit } from './process.js'
import { EXECUTOR_NAMES, type Executor, type ExecutorName } from './types.js'
import { createVmExecutor, type VmExecutorInit } from './vm.js'

export type * from './types.js'
export { createProcessExecutor } from './process.js'
export { createDockerExecutor } from './docker.js'
export { createVmExecutor } from './vm.js'

export { EXECUTOR_NAMES } from './types.js'

/**
 * The executors a node offers: each one known is built and probed at start, and only those that
 * work here are offered (`available`, which the allocation runtime gets). `status()` says for each
 * whether it is available and why (for `/dms/node/status`): the process executor names the
 * limits it enforces, the docker executor the engine that answered, or why none did, the vm
 * executor the acceleration (KVM or TCG) and the guest, or what is missing (QEMU, kernel, initramfs).
 */
export interface ExecutorsInit {
  nodeId: string
  /** The node's data dir: the process and vm executors keep their registries in `<dataDir>/executors/<name>`. */
  dataDir: string
  /** Which executors to build (default all of EXECUTOR_NAMES). */
  enabled?: string[]
  process?: Omit<ProcessExecutorInit, 'nodeId' | 'stateDir'>
  docker?: Omit<DockerExecutorInit, 'nodeId'>
  vm?: Omit<VmExecutorInit, 'nodeId' | 'stateDir'>
}

export interface ExecutorsComponents {
  log: Logger
}

export type ExecutorStatus =
  | { name: ExecutorName, available: true, detail: string }
  | { name: ExecutorName, available: false, reason: string }

export interface Executors {
  /** Builds and probes each enabled executor (probes never throw; they run concurrently). */
  start: () => Promise<ExecutorStatus[]>
  /** Closes every executor (their workloads keep running, see Executor.close). */
  stop: () => Promise<void>
  /**
   * The executors that work here, by name. One object for the node's life: a later `probe()`
   * updates it in place, so whoever holds it sees an engine that came (or went).
   */
  readonly available: Partial<Record<ExecutorName, Executor>>
  /** What the last probe found, in EXECUTOR_NAMES order. */
  status: () => ExecutorStatus[]
  /** Probes again. */
  probe: () => Promise<ExecutorStatus[]>
  /** An available executor: `BadRequest` for a name dms does not know, `ExecutorUnavailable` for one not offered here. */
  get: (name: string) => Executor
}

const isName = (n: string): n is ExecutorName => (EXECUTOR_NAMES as readonly string[]).includes(n)

export function createExecutors (init: ExecutorsInit, components: ExecutorsComponents): Executors {
  const enabled = init.enabled ?? [...EXECUTOR_NAMES]
  for (const n of enabled) {
    if (!isName(n)) throw new InvalidConfig(`unknown executor '${n}' (known: ${EXECUTOR_NAMES.join(', ')})`, { key: 'executors', executor: n })
  }
  const log = components.log
  const built = new Map<ExecutorName, Executor>()
  /** Executors whose construction refused its configuration (e.g. a malformed DOCKER_HOST). */
  const refused = new Map<ExecutorName, string>()
  const available: Partial<Record<ExecutorName, Executor>> = {}
  let last: ExecutorStatus[] = []

  const builders: Record<ExecutorName, () => Executor> = {
    process: () => createProcessExecutor({ ...init.process, nodeId: init.nodeId, stateDir: join(init.dataDir, 'executors', 'process') }, { log: log.child({ executor: 'process' }) }),
    docker: () => createDockerExecutor({ ...init.docker, nodeId: init.nodeId }, { log: log.child({ executor: 'docker' }) }),
    vm: () => createVmExecutor({ ...init.vm, nodeId: init.nodeId, stateDir: join(init.dataDir, 'executors', 'vm') }, { log: log.child({ executor: 'vm' }) })
  }
  const build = (name: ExecutorName): Executor => builders[name]()

  const probe = async (): Promise<ExecutorStatus[]> => {
    const results = await Promise.all(EXECUTOR_NAMES.filter(n => built.has(n) || refused.has(n)).map(async (name): Promise<ExecutorStatus> => {
      const ex = built.get(name)
      if (ex === undefined) return { name, available: false, reason: refused.get(name) ?? 'not built' }
      const p = await ex.probe().catch((err: unknown) => ({ available: false as const, reason: `probe failed: ${(err as Error).message}` }))
      if (p.available) {
        available[name] = ex
        return { name, available: true, detail: p.detail }
      }
      delete available[name]
      return { name, available: false, reason: p.reason }
    }))
    last = results
    return results
  }

  return {
    available,
    async start () {
      for (const n of EXECUTOR_NAMES) {
        if (!enabled.includes(n) || built.has(n)) continue
        try {
          built.set(n, build(n))
          refused.delete(n)
        } catch (err) {
          refused.set(n, `its configuration is refused: ${(err as Error).message}`)
        }
      }
      const status = await probe()
      for (const s of status) {
        if (s.available) log.info({ executor: s.name, detail: s.detail }, 'executor available')
        else log.info({ executor: s.name, reason: s.reason }, 'executor not available')
      }
      return status
    },
    async stop () {
      for (const [name, ex] of built) {
        await ex.close().catch((err: unknown) => { log.warn({ err, executor: name }, 'closing the executor failed') })
        delete available[name]
      }
      built.clear()
    },
    status: () => last,
    probe,
    get (name) {
      if (!isName(name)) throw new BadRequest(`unknown executor '${name}' (known: ${EXECUTOR_NAMES.join(', ')})`, { field: 'executor', executor: name })
      const ex = available[name]
      if (ex === undefined) {
        const s = last.find(x => x.name === name)
        throw new ExecutorUnavailable(`the ${name} executor is not available on this node${s !== undefined && !s.available ? `: ${s.reason}` : ''}`, { executor: name })
      }
      return ex
    }
  }
}
