import type { HealthCheck, RestartPolicy } from '../allocations/spec.js'
import type { ExecutorName } from '../executors/types.js'
import type { GpuRequest } from '../resources/vector.js'

/**
 * An ensemble as dms uses it once parsed and validated (`parseEnsemble` in ensemble.ts): every
 * size in bytes, every duration in ms, every name checked, DMS's loose spellings folded into one
 * form. The orchestrator reads only this, never the YAML.
 */

/** What `supervisor.strategy` applies when an allocation fails for good (specs/deployments.md). */
export type SupervisorStrategy = 'OneForOne' | 'AllForOne' | 'RestForOne'

/**
 * DMS's per-allocation/per-node `failure_recovery`: `stay_down` leaves a failed allocation down
 * (no restart by the orchestrator; the deployment goes on), the others name a strategy for it.
 */
export type FailureRecovery = 'stay_down' | 'one_for_one' | 'all_for_one' | 'rest_for_one'

export interface EnsembleAllocation {
  name: string
  executor: ExecutorName
  type: 'service' | 'task'
  resources: { cpuCores: number, ramBytes: number, diskBytes: number, gpus: GpuRequest[] }
  execution: {
    /** docker only. */
    image?: string
    /** process: the argv; docker: the container's Cmd (DMS's `cmd`, or `args` when there is no `cmd`). */
    command?: string[]
    entrypoint?: string[]
    env: Record<string, string>
    workingDir?: string
  }
  /** `dns_name` (or DMS's `dnsname`). */
  dnsName?: string
  /** In the allocation spec's form (src/services/allocations/spec.ts). */
  healthcheck?: HealthCheck
  /** Allocations that must be running (and healthy, where they have a check) before this starts. */
  dependsOn: string[]
  /** The provider's restart policy for a service (allocation spec form). */
  restart?: RestartPolicy
  failureRecovery?: FailureRecovery
}

export interface EnsemblePort {
  /** Host port on the provider; absent: any free one, leased by the provider. */
  public?: number
  private: number
  allocation: string
  protocol: 'tcp' | 'udp'
}

export interface EnsembleNode {
  name: string
  allocations: string[]
  ports: EnsemblePort[]
  /** Provider locations accepted / rejected: each a `continent/country/city` prefix, e.g. `EU/DE`. */
  location?: { accept: string[], reject: string[] }
  /** Every one must equal the provider's label of that key. */
  labels: Record<string, string>
  /** Pinned provider: a PeerId or a node's did:key. */
  peer?: string
  failureRecovery?: FailureRecovery
}

export interface Ensemble {
  version: 'V1'
  allocations: Record<string, EnsembleAllocation>
  nodes: Record<string, EnsembleNode>
  supervisor: {
    strategy: SupervisorStrategy
    /** Restarts by the orchestrator allowed within `windowMs`; one more and the deployment fails. */
    maxRestarts: number
    windowMs: number
  }
  /** Fields of DMS's format that dms reads but does not act on (`subnet`, `keys`, `provision`, `redundancy`), by path, for the plan to show. */
  ignored: string[]
  /**
   * How ambiguous spellings were read, one `path: what was assumed` each, for `--dry-run` to
   * show (a bare size such as DMS's `size: 2048`, a `dnsname` overridden by `dns_name`).
   */
  notes?: string[]
}

/** One problem in an ensemble file: where (`allocations.web.resources.ram.size`) and what. */
export interface EnsembleIssue {
  path: string
  message: string
}

/** What `dms deploy --dry-run` shows: the order of starts and what each node asks of a provider. */
export interface EnsemblePlan {
  /** Allocation names in start order: each layer's dependencies are all in earlier layers. */
  layers: string[][]
  nodes: Array<{
    name: string
    allocations: string[]
    /** Sum over the node's allocations. */
    resources: { cpuCores: number, ramBytes: number, diskBytes: number, gpus: GpuRequest[] }
    executors: ExecutorName[]
    ports: EnsemblePort[]
    peer?: string
  }>
  ignored: string[]
  /** The ensemble's `notes`. */
  notes?: string[]
}
