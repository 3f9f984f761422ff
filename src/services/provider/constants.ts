/** Sublevel of the node's db holding commits (one record per ensemble id). */
export const COMMITS_SUBLEVEL = 'commits'
/** A commit holds this long unless the request says otherwise (DMS's orchestrator allocates within seconds). */
export const DEFAULT_COMMIT_TTL_MS = 60_000
/** Allocations in one commit: an ensemble is a handful; this bounds one request's work. */
export const MAX_ALLOCATIONS_PER_COMMIT = 64
/** How often expired commits (never allocated) release their ports and records. */
export const COMMIT_SWEEP_MS = 2_000
/** Lifetime of the delegation a node gives each allocation actor (re-issued at every start). */
export const ALLOCATION_DELEGATION_MS = 30 * 24 * 3600_000
/** The capability an allocation actor holds, delegated by its node at spawn. */
export const ALLOCATION_CAPABILITY = '/dms/allocation'
/** Inbox prefix of allocation actors. */
export const ALLOCATION_INBOX_PREFIX = 'alloc/'
/** Allocation ids of `dms alloc run`, `/dms/node/container/start` and `/dms/node/vm/start/custom`: `<prefix><random>.main`. */
export const LOCAL_ENSEMBLE_PREFIX = { run: 'run-', container: 'ctr-', vm: 'vm-' } as const
