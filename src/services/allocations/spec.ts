import { z } from 'zod'
import { BadRequest } from '../../lib/errors.js'
import { EXECUTOR_NAMES } from '../executors/types.js'
import {
  DEFAULT_HEALTH, DEFAULT_LOG_KEEP, DEFAULT_LOG_MAX_BYTES, DEFAULT_RESTART, DEFAULT_STOP_GRACE_MS,
  MAX_LOG_KEEP, MAX_STOP_GRACE_MS, MAX_TRANSITIONS, MIN_HEALTH_INTERVAL_MS, MIN_LOG_MAX_BYTES
} from './constants.js'

/**
 * What an allocation runs and how it is looked after (`AllocationSpec`), and what is persisted
 * about it (`AllocationRecord`). Every object is strict: an unknown field is refused by name,
 * never ignored. `parseSpec` turns the first problem into a `BadRequest` naming the field.
 */
const port = z.number().int().min(1).max(65535)
const ms = z.number().int().nonnegative()

/** Names a shell can export; `DMS_` is ours (DMS_ALLOCATION_ID, DMS_PORT_*, DMS_PORTS). */
const EnvName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name is letters, digits and _, not starting with a digit')
  .refine(n => !n.startsWith('DMS_'), 'names starting with DMS_ are set by dms itself')

const timing = {
  intervalMs: ms.min(MIN_HEALTH_INTERVAL_MS).default(DEFAULT_HEALTH.intervalMs),
  timeoutMs: ms.min(1).default(DEFAULT_HEALTH.timeoutMs),
  /** Consecutive failures that make it unhealthy. */
  retries: z.number().int().min(1).max(100).default(DEFAULT_HEALTH.retries),
  /** Failures in this long after a start do not count (it is still coming up), unless a check passed already. */
  startPeriodMs: ms.default(DEFAULT_HEALTH.startPeriodMs)
}

export const HealthCheckSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('command'),
    /** Run in the workload (process: its cwd and env; docker: exec). Pass: exit 0. */
    command: z.array(z.string()).min(1),
    /** And, if given, stdout or stderr contains this. */
    contains: z.string().optional(),
    ...timing
  }),
  z.strictObject({
    type: z.literal('http'),
    /** One of the spec's ports (its container side); GET on its host port on 127.0.0.1. Pass: 2xx. */
    port,
    path: z.string().startsWith('/').default('/'),
    ...timing
  }),
  z.strictObject({
    type: z.literal('tcp'),
    /** One of the spec's ports (container side). Pass: a TCP connection is accepted. */
    port,
    ...timing
  })
])
export type HealthCheck = z.infer<typeof HealthCheckSchema>

export const RestartPolicySchema = z.strictObject({
  policy: z.enum(['never', 'on-failure', 'always']),
  /** Restarts allowed within `windowMs`; one more failure makes the service `failed`. */
  maxRestarts: z.number().int().min(0).max(1000).default(DEFAULT_RESTART.maxRestarts),
  windowMs: ms.min(1).default(DEFAULT_RESTART.windowMs),
  /** Wait before restart n (n = restarts already in the window): min(maxMs, baseMs · 2ⁿ). */
  backoff: z.strictObject({
    baseMs: ms.default(DEFAULT_RESTART.backoff.baseMs),
    maxMs: ms.default(DEFAULT_RESTART.backoff.maxMs)
  }).prefault({})
})
export type RestartPolicy = z.infer<typeof RestartPolicySchema>

export const PortSchema = z.strictObject({
  /** Leased from the port allocator by the caller. */
  host: port,
  /**
   * docker: the port inside the container. process: the name the workload knows the port by (a
   * process has no port of its own besides the host's): it listens on `$DMS_PORT_<container>`.
   */
  container: port,
  protocol: z.enum(['tcp', 'udp']).default('tcp')
})
export type AllocationPort = z.infer<typeof PortSchema>

export const AllocationSpecSchema = z.strictObject({
  /** task: runs to completion; service: kept running under its restart policy. */
  type: z.enum(['task', 'service']),
  executor: z.enum(EXECUTOR_NAMES).default('process'),
  /** process: argv (argv[0] on the spec's PATH, no shell); docker: the container's Cmd. */
  command: z.array(z.string()).min(1).optional(),
  /** docker only. */
  entrypoint: z.array(z.string()).optional(),
  /** docker only (required there). */
  image: z.string().min(1).optional(),
  /** The workload's whole environment besides DMS_ALLOCATION_ID, DMS_PORT_* and DMS_PORTS. */
  env: z.record(EnvName, z.string()).default({}),
  /** process: default `<allocation dir>/work`; docker: the image's. */
  workingDir: z.string().min(1).optional(),
  /**
   * vm only: a guest of the caller's own instead of the node's (paths on the node, under one of
   * its image directories; see specs/allocations.md); `bootArgs` go after the executor's own.
   */
  vm: z.strictObject({
    kernel: z.string().min(1).optional(),
    initrd: z.string().min(1).optional(),
    rootfs: z.string().min(1).optional(),
    bootArgs: z.string().optional()
  }).optional(),
  /** Limits the executor enforces (0: none in that dimension). */
  resources: z.strictObject({
    cpuCores: z.number().nonnegative().max(1024),
    ramBytes: z.number().int().nonnegative()
  }).default({ cpuCores: 0, ramBytes: 0 }),
  ports: z.array(PortSchema).max(64).default([]),
  healthcheck: HealthCheckSchema.optional(),
  /** service only; default DEFAULT_RESTART. */
  restart: RestartPolicySchema.optional(),
  stopGraceMs: ms.max(MAX_STOP_GRACE_MS).default(DEFAULT_STOP_GRACE_MS),
  logs: z.strictObject({
    /** Per stream, before rotation. */
    maxBytes: z.number().int().min(MIN_LOG_MAX_BYTES).default(DEFAULT_LOG_MAX_BYTES),
    /** Rotated files kept per stream (0: the oldest output is dropped at rotation). */
    keep: z.number().int().min(0).max(MAX_LOG_KEEP).default(DEFAULT_LOG_KEEP)
  }).prefault({})
}).superRefine((s, ctx) => {
  const issue = (path: Array<string | number>, message: string): void => { ctx.addIssue({ code: 'custom', path, message }) }
  if (s.executor === 'process' || s.executor === 'vm') {
    if (s.command === undefined) issue(['command'], `the ${s.executor} executor needs a command`)
    if (s.image !== undefined) issue(['image'], `the ${s.executor} executor runs no images`)
    if (s.entrypoint !== undefined) issue(['entrypoint'], `the ${s.executor} executor has no entrypoint: put the whole argv in command`)
  }
  // A VM has no network device yet: a port could not be reached.
  if (s.executor === 'vm' && s.ports.length > 0) issue(['ports'], 'the vm executor gives its guests no network yet: no ports')
  if (s.executor !== 'vm' && s.vm !== undefined) issue(['vm'], `the ${s.executor} executor boots no guest: vm applies to the vm executor`)
  if (s.executor === 'docker' && s.image === undefined) issue(['image'], 'the docker executor needs an image')
  if (s.type === 'task') {
    if (s.restart !== undefined && s.restart.policy !== 'never') issue(['restart', 'policy'], 'a task runs once: only policy never applies')
    if (s.healthcheck !== undefined) issue(['healthcheck'], 'health checks apply to services')
  }
  if (s.restart !== undefined && s.restart.backoff.maxMs < s.restart.backoff.baseMs) issue(['restart', 'backoff', 'maxMs'], 'maxMs must be at least baseMs')
  const hosts = new Set<string>()
  const containers = new Set<string>()
  s.ports.forEach((p, i) => {
    if (hosts.has(`${p.host}/${p.protocol}`)) issue(['ports', i, 'host'], `host port ${p.host}/${p.protocol} is given twice`)
    if (containers.has(`${p.container}/${p.protocol}`)) issue(['ports', i, 'container'], `container port ${p.container}/${p.protocol} is given twice`)
    hosts.add(`${p.host}/${p.protocol}`)
    containers.add(`${p.container}/${p.protocol}`)
  })
  const hc = s.healthcheck
  if (hc !== undefined && hc.type !== 'command' && !s.ports.some(p => p.container === hc.port && p.protocol === 'tcp')) {
    issue(['healthcheck', 'port'], `port ${hc.port} is not one of the allocation's tcp ports (${s.ports.filter(p => p.protocol === 'tcp').map(p => p.container).join(', ') || 'none'})`)
  }
})
export type AllocationSpec = z.infer<typeof AllocationSpecSchema>
export type AllocationSpecInput = z.input<typeof AllocationSpecSchema>

/** The restart policy in force: the spec's, or for a service the default, for a task `never`. */
export function restartPolicyOf (spec: AllocationSpec): RestartPolicy {
  if (spec.restart !== undefined) return spec.restart
  return spec.type === 'service' ? { ...DEFAULT_RESTART, backoff: { ...DEFAULT_RESTART.backoff } } : { ...DEFAULT_RESTART, policy: 'never', backoff: { ...DEFAULT_RESTART.backoff } }
}

/** Checks and normalizes a spec; `BadRequest` names the first wrong field and why. */
export function parseSpec (input: unknown): AllocationSpec {
  const r = AllocationSpecSchema.safeParse(input)
  if (r.success) return r.data
  throw badRequestFrom(r.error, 'spec')
}

export function badRequestFrom (error: z.ZodError, root: string): BadRequest {
  const issue = error.issues[0]
  const path = [root, ...issue.path.map(String)]
  if (issue.code === 'unrecognized_keys') {
    const field = [...path, issue.keys[0]].join('.')
    return new BadRequest(`unknown field ${field}`, { field, unknown: issue.keys })
  }
  const field = path.join('.')
  return new BadRequest(`${field}: ${issue.message}`, { field, issue: issue.code })
}

// ---- the record ----

export const STATUSES = ['pending', 'starting', 'running', 'completed', 'failed', 'stopped'] as const
export type AllocationStatus = typeof STATUSES[number]
export const TERMINAL: ReadonlySet<AllocationStatus> = new Set(['completed', 'failed', 'stopped'])
export const isTerminal = (s: AllocationStatus): boolean => TERMINAL.has(s)

/** Which status may follow which: anything else is a bug, refused with InvalidState. */
export const NEXT: Record<AllocationStatus, readonly AllocationStatus[]> = {
  pending: ['starting', 'failed', 'stopped'],
  // starting → starting: a failed start attempt of a service, retried under its policy.
  starting: ['starting', 'running', 'failed', 'stopped'],
  // running → starting: a restart (policy, health, or asked for).
  running: ['starting', 'completed', 'failed', 'stopped'],
  completed: [],
  failed: [],
  stopped: []
}

export const WorkloadRefSchema = z.object({
  executor: z.enum(EXECUTOR_NAMES),
  allocationId: z.string(),
  id: z.string(),
  startTime: z.string(),
  limits: z.string()
})

export const TransitionSchema = z.object({ at: z.number(), status: z.enum(STATUSES), reason: z.string() })
export type Transition = z.infer<typeof TransitionSchema>

export const HealthStateSchema = z.object({
  status: z.enum(['unknown', 'healthy', 'unhealthy']),
  /** Consecutive failures so far. */
  failures: z.number().int().nonnegative(),
  checkedAt: z.number().optional(),
  /** What the last failing check saw. */
  detail: z.string().optional()
})
export type HealthState = z.infer<typeof HealthStateSchema>

export const AllocationRecordSchema = z.object({
  id: z.string(),
  type: z.enum(['task', 'service']),
  executor: z.enum(EXECUTOR_NAMES),
  spec: AllocationSpecSchema,
  status: z.enum(STATUSES),
  /** Why it is in this status, in words a person reads. */
  reason: z.string(),
  /** The latest MAX_TRANSITIONS transitions, oldest first; `transitionCount` counts them all. */
  transitions: z.array(TransitionSchema).max(MAX_TRANSITIONS),
  transitionCount: z.number().int().nonnegative(),
  /** The current (or last) workload: enough to find it again after a restart of the daemon. */
  ref: WorkloadRefSchema.optional(),
  /** Which limits applied to the last workload (`WorkloadRef.limits`). */
  limits: z.string().optional(),
  exitCode: z.number().int().nullable().optional(),
  signal: z.string().nullable().optional(),
  /** Restarts so far (policy, health, asked for). */
  restarts: z.number().int().nonnegative(),
  /** When the policy's restarts in the current window happened (unix ms). */
  restartTimes: z.array(z.number()),
  health: HealthStateSchema.optional(),
  createdAt: z.number(),
  startedAt: z.number().optional(),
  endedAt: z.number().optional(),
  /** The caller released its resources and ports (`onEnded` returned) after it ended. */
  released: z.boolean()
})
export type AllocationRecord = z.infer<typeof AllocationRecordSchema>
export { MAX_TRANSITIONS }
