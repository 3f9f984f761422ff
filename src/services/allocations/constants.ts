/** The allocations' sublevel of the node's db: one JSON record per allocation id. */
export const ALLOCATIONS_SUBLEVEL = 'allocations'

/** Transitions kept in a record: enough to read a restart loop, bounded so records stay small. */
export const MAX_TRANSITIONS = 50

/** SIGTERM → SIGKILL grace when a spec sets none (Docker's default is 10 s too). */
export const DEFAULT_STOP_GRACE_MS = 10_000
/** The most a spec may ask for: a stop must end within bounded time. */
export const MAX_STOP_GRACE_MS = 5 * 60_000

/**
 * Restart policy of a service that sets none: restart on failure, at most 5 times in 10 minutes,
 * waiting 1 s, 2 s, 4 s, … up to 1 min between attempts.
 */
export const DEFAULT_RESTART = { policy: 'on-failure', maxRestarts: 5, windowMs: 10 * 60_000, backoff: { baseMs: 1_000, maxMs: 60_000 } } as const

/** Health check defaults (Docker's: 30 s interval, 30 s timeout, 3 retries; ours check sooner). */
export const DEFAULT_HEALTH = { intervalMs: 10_000, timeoutMs: 5_000, retries: 3, startPeriodMs: 0 } as const
/** Health checks no more often than this: each one may fork a process in the workload. */
export const MIN_HEALTH_INTERVAL_MS = 50

/** Log files: rotated past this size (per stream), keeping this many rotated files. */
export const DEFAULT_LOG_MAX_BYTES = 10 * 2 ** 20
export const DEFAULT_LOG_KEEP = 1
export const MIN_LOG_MAX_BYTES = 4096
export const MAX_LOG_KEEP = 10
/** How often the sizes of running allocations' logs are checked for rotation. */
export const LOG_CHECK_INTERVAL_MS = 1_000
/** A log long poll re-checks at least this often, in case a change notification is missed. */
export const LOG_POLL_FALLBACK_MS = 1_000
/** One read answers at most this much (a reply must fit a frame: 4 MiB by default). */
export const MAX_LOG_READ_BYTES = 1 * 2 ** 20

/** Grace for workloads that no record claims, stopped at recovery. */
export const ORPHAN_GRACE_MS = 5_000
