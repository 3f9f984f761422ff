import { z } from 'zod'
import { HealthCheckSchema, RestartPolicySchema } from '../allocations/index.js'
import { ResourceRequestSchema } from '../resources/index.js'
import { MAX_LOG_READ_BYTES } from '../allocations/constants.js'
import { EXECUTOR_NAMES } from '../executors/types.js'
import { MIN_RAM_BYTES } from '../executors/vm/constants.js'
import { MAX_RESERVATION_TTL_MS } from '../resources/constants.js'
import { DEFAULT_COMMIT_TTL_MS, MAX_ALLOCATIONS_PER_COMMIT } from './constants.js'

/**
 * The provider side of a deployment (NuNet DMS's names): an orchestrator **commits** resources and
 * ports for named allocations of an ensemble (with an expiry), **allocates** them (each becomes an
 * allocation actor), starts them through the actors, and **reverts** it all. Every request object
 * is strict: an unknown field is refused by name.
 */

/** An ensemble id and an allocation name, as they make an allocation id `<ensemble>.<name>`. */
export const EnsembleId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, 'an ensemble id is 1–64 letters, digits, _ or -')
export const AllocationName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$/, 'an allocation name is 1–48 letters, digits, _ or -')

/** A port of an allocation: `private` inside it, `public` on the node (leased; chosen when absent). */
export const PortAsk = z.strictObject({
  private: z.number().int().min(1).max(65535),
  public: z.number().int().min(1).max(65535).optional(),
  protocol: z.enum(['tcp', 'udp']).default('tcp')
})
export const PortGiven = z.object({ private: z.number().int(), public: z.number().int(), protocol: z.enum(['tcp', 'udp']) })
export type PortGiven = z.infer<typeof PortGiven>

/** A did:key, typed as the actor layer types it. */
const DidKey = z.templateLiteral(['did:key:z', z.string()])
export const HandleSchema = z.object({ id: DidKey, did: DidKey, addr: z.object({ peer: z.string(), inbox: z.string() }) })

export const CommitRequest = z.strictObject({
  ensembleId: EnsembleId,
  /** How long the commit holds before it is released by itself unless allocated. */
  ttlMs: z.number().int().positive().max(MAX_RESERVATION_TTL_MS).default(DEFAULT_COMMIT_TTL_MS),
  /** The orchestrator actor, when there is one: asked after a restart whether the ensemble is still wanted here. */
  orchestrator: HandleSchema.optional(),
  allocations: z.array(z.strictObject({
    name: AllocationName,
    resources: ResourceRequestSchema,
    ports: z.array(PortAsk).max(64).default([])
  })).min(1).max(MAX_ALLOCATIONS_PER_COMMIT)
})
export type CommitRequest = z.input<typeof CommitRequest>

export const CommitReply = z.object({
  ensembleId: z.string(),
  expiresAt: z.number(),
  allocations: z.array(z.object({ name: z.string(), id: z.string(), ports: z.array(PortGiven) }))
})
export type CommitReply = z.infer<typeof CommitReply>

/**
 * `spec` is an allocation spec (specs/allocations.md) without `resources` and `ports`: the commit
 * fixed those (its reservation becomes the workload's limits, its leased ports the workload's).
 */
export const AllocateRequest = z.strictObject({
  ensembleId: EnsembleId,
  allocations: z.array(z.strictObject({ name: AllocationName, spec: z.record(z.string(), z.unknown()) })).min(1).max(MAX_ALLOCATIONS_PER_COMMIT)
})


export const AllocateReply = z.object({
  ensembleId: z.string(),
  allocations: z.array(z.object({ name: z.string(), id: z.string(), handle: HandleSchema }))
})
export type AllocateReply = z.infer<typeof AllocateReply>

export const RevertReply = z.object({
  ensembleId: z.string(),
  /** Allocations stopped and removed. */
  allocations: z.array(z.string()),
  /** Reservations released that were never allocated. */
  reservations: z.array(z.string())
})
export type RevertReply = z.infer<typeof RevertReply>

/** One allocation as `/dms/node/allocations/list` and `dms alloc` show it. */
export const AllocationView = z.object({
  id: z.string(),
  ensembleId: z.string(),
  name: z.string(),
  /** Its actor's handle (absent only while the actor is being spawned). */
  handle: HandleSchema.optional(),
  owner: z.string(),
  type: z.enum(['task', 'service']),
  executor: z.enum(EXECUTOR_NAMES),
  status: z.enum(['pending', 'starting', 'running', 'completed', 'failed', 'stopped']),
  reason: z.string(),
  resources: z.object({ cpuCores: z.number(), ramBytes: z.number(), diskBytes: z.number() }),
  ports: z.array(PortGiven),
  /** Which limits apply to its workload (cgroup-v2, cgroup-v1, rlimit, docker, none). */
  limits: z.string().optional(),
  /** Its current (or last) workload on the executor: a process's pid, a container's id. */
  workload: z.string().optional(),
  image: z.string().optional(),
  command: z.array(z.string()).optional(),
  createdAt: z.string(),
  startedAt: z.string().optional(),
  endedAt: z.string().optional(),
  exitCode: z.number().int().nullable().optional(),
  signal: z.string().nullable().optional(),
  restarts: z.number().int(),
  health: z.object({ status: z.enum(['unknown', 'healthy', 'unhealthy']), failures: z.number().int(), checkedAt: z.string().optional(), detail: z.string().optional() }).optional(),
  transitions: z.array(z.object({ at: z.string(), status: z.string(), reason: z.string() }))
})
export type AllocationView = z.infer<typeof AllocationView>

/**
 * `/dms/node/vm/start/custom` (DMS's path and field names): a command, vCPUs and memory → a vm
 * allocation here, booting this node's guest or, with `kernel` / `initrd` / `rootfs`, files of
 * the caller's own on the node (absolute paths under the node's image directories; the rootfs a
 * read-only virtio disk), `bootArgs` appended to the executor's kernel command line (see
 * specs/allocations.md for those it refuses).
 */
export const VmStartRequest = z.strictObject({
  cmd: z.array(z.string()).min(1),
  vcpus: z.number().positive().max(64).default(1),
  /** Bytes of guest memory (at least what the guest needs to boot). */
  memory: z.number().int().min(MIN_RAM_BYTES),
  env: z.record(z.string(), z.string()).optional(),
  workingDir: z.string().optional(),
  type: z.enum(['task', 'service']).default('service'),
  restart: RestartPolicySchema.optional(),
  healthcheck: HealthCheckSchema.optional(),
  kernel: z.string().min(1).optional(),
  initrd: z.string().min(1).optional(),
  rootfs: z.string().min(1).optional(),
  bootArgs: z.string().optional()
})

/** `/dms/node/container/start`: an image, a command, resources and ports → a docker allocation here. */
export const ContainerStartRequest = z.strictObject({
  image: z.string().min(1),
  command: z.array(z.string()).optional(),
  entrypoint: z.array(z.string()).optional(),
  env: z.record(z.string(), z.string()).optional(),
  workingDir: z.string().optional(),
  type: z.enum(['task', 'service']).default('service'),
  resources: ResourceRequestSchema,
  ports: z.array(PortAsk).max(64).default([]),
  restart: RestartPolicySchema.optional(),
  healthcheck: HealthCheckSchema.optional()
})

/** A read of an allocation's output (`/dms/allocation/logs`, and `/dms/node/deployment/logs` for one of a deployment). */
export const LogReadFields = {
  stream: z.enum(['stdout', 'stderr']).default('stdout'),
  offset: z.number().int().nonnegative().default(0),
  maxBytes: z.number().int().positive().max(MAX_LOG_READ_BYTES).default(64 * 1024),
  wait: z.boolean().default(false)
}
/** A chunk of output from a byte offset; `ended`: the allocation ended and nothing more will come. */
export const LogChunkReply = z.object({ data: z.string(), nextOffset: z.number().int(), eof: z.boolean(), ended: z.boolean(), skipped: z.number().int().optional() })
