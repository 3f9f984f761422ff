import { z } from 'zod'

/**
 * The wire and disk shapes of jobs (specs/jobs.md). Requests are strict: an unknown field is
 * refused by name.
 */

export const JOB_STATUSES = ['Placing', 'Running', 'Reducing', 'Completed', 'Failed', 'Cancelled'] as const
export type JobStatus = typeof JOB_STATUSES[number]
export const isJobFinal = (s: JobStatus): boolean => s === 'Completed' || s === 'Failed' || s === 'Cancelled'

export const PART_STATUSES = ['pending', 'running', 'done', 'failed'] as const
export type PartStatus = typeof PART_STATUSES[number]

/** One input of a job as the CLI sends it: a file's name and its bytes (base64). */
export const JobInput = z.strictObject({ name: z.string().min(1).max(255), data: z.string() })
export type JobInput = z.infer<typeof JobInput>

/** One run of a part on one node: a deployment of a single task allocation. */
export const PartRun = z.object({
  attempt: z.number().int().positive(),
  peer: z.string(),
  deployment: z.string(),
  startedAt: z.number(),
  endedAt: z.number().optional(),
  /** ok: recorded; duplicate: ended ok after another run was recorded; exit: non-zero exit; node: its node failed it; cancelled. */
  outcome: z.enum(['ok', 'duplicate', 'exit', 'node', 'cancelled']).optional(),
  exitCode: z.number().int().optional(),
  reason: z.string().optional()
})
export type PartRun = z.infer<typeof PartRun>

export const PartRecord = z.object({
  index: z.number().int().nonnegative(),
  status: z.enum(PART_STATUSES),
  /** Non-zero exits so far (a retry each, up to the job's `retries`). */
  exits: z.number().int().nonnegative(),
  /** Runs its node failed (lost, timed out, refused): each is run again elsewhere. */
  placements: z.number().int().nonnegative(),
  runs: z.array(PartRun),
  /** The recorded result: written once, by the first run that ended with exit 0. */
  result: z.object({ bytes: z.number().int(), sha256: z.string(), peer: z.string(), attempt: z.number().int(), at: z.number() }).optional(),
  stderrTail: z.string().optional()
})
export type PartRecord = z.infer<typeof PartRecord>

export const JobTransition = z.object({ at: z.number(), status: z.enum(JOB_STATUSES), reason: z.string() })

export const JobRecord = z.object({
  id: z.string(),
  owner: z.string(),
  /** The job as parsed (job-file.ts, JobSpec). */
  spec: z.record(z.string(), z.unknown()),
  status: z.enum(JOB_STATUSES),
  reason: z.string(),
  createdAt: z.number(),
  endedAt: z.number().optional(),
  /** Bumped on every persisted change: `status` long polls wait for a later one. */
  version: z.number().int(),
  transitions: z.array(JobTransition),
  transitionCount: z.number().int(),
  /** The nodes the job runs on (peer ids), as chosen at placement. */
  workers: z.array(z.string()),
  parts: z.array(PartRecord),
  result: z.object({ bytes: z.number().int(), sha256: z.string() }).optional(),
  /** Which part failed the job, if one did. */
  failedPart: z.number().int().optional()
})
export type JobRecord = z.infer<typeof JobRecord>

export const JobView = z.object({
  id: z.string(),
  name: z.string().optional(),
  status: z.enum(JOB_STATUSES),
  reason: z.string(),
  owner: z.string(),
  createdAt: z.string(),
  endedAt: z.string().optional(),
  version: z.number().int(),
  transitions: z.array(z.object({ at: z.string(), status: z.enum(JOB_STATUSES), reason: z.string() })),
  transitionCount: z.number().int(),
  workers: z.array(z.string()),
  counts: z.object({ parts: z.number().int(), pending: z.number().int(), running: z.number().int(), done: z.number().int(), failed: z.number().int(), runs: z.number().int(), duplicates: z.number().int() }),
  parts: z.array(z.object({ index: z.number().int(), status: z.enum(PART_STATUSES), runs: z.number().int(), exits: z.number().int(), placements: z.number().int(), peer: z.string().optional(), bytes: z.number().int().optional(), sha256: z.string().optional(), /** Its recorded run, from the coordinator starting it to its result recorded (ms). */ recordedMs: z.number().optional() })),
  result: z.object({ bytes: z.number().int(), sha256: z.string() }).optional(),
  failedPart: z.number().int().optional(),
  stderrTail: z.string().optional()
})
export type JobView = z.infer<typeof JobView>

/** A chunk of a file kept at the origin (a result, a part's output or stderr). */
export const FileChunk = z.object({ data: z.string(), offset: z.number().int(), nextOffset: z.number().int(), size: z.number().int(), eof: z.boolean(), sha256: z.string().optional() })
export type FileChunk = z.infer<typeof FileChunk>
