/** Gossipsub topic of bid requests (ARCHITECTURE.md, "Defaults worth knowing"; DMS's name). */
export const DEPLOYMENT_TOPIC = '/nunet/deployment'
/** Sublevel of the node's db holding deployments (one record per ensemble id). */
export const DEPLOYMENTS_SUBLEVEL = 'deployments'
/** Inbox prefix of orchestrator actors: `orch/<ensembleId>`. */
export const ORCHESTRATOR_INBOX_PREFIX = 'orch/'
/**
 * Bid collection ends when every node has a bid, or after this long (DMS always waits 5 s; on
 * loopback every bid is in within a few ms, across continents within a few hundred).
 */
export const DEFAULT_BID_WINDOW_MS = 1_000
/** A deployment's deadline unless the request says otherwise (`dms deploy --timeout`). */
export const DEFAULT_DEPLOY_TIMEOUT_MS = 120_000
/** Deadline of one call to a provider (commit, allocate, start, status). */
export const PROVIDER_CALL_MS = 10_000
/** A call made just before a deployment's deadline still gets this long. */
export const MIN_CALL_MS = 250
/**
 * How long a provider keeps a commit that the orchestrator does not allocate: enough for the
 * allocate that follows at once, short enough that a dead orchestrator leaks nothing for long.
 */
export const COMMIT_TTL_MS = 30_000
/** Supervision: each allocation's status is asked this often once the deployment runs. */
export const SUPERVISE_INTERVAL_MS = 1_000
/** A provider that answers no status call for this long is lost: its allocations are placed elsewhere. */
export const PROVIDER_LOST_MS = 5_000
/** While starting: how often a started allocation is asked whether it runs (and is healthy). */
export const START_POLL_MS = 100
/** Candidates asked why they did not bid, when some node has no bid. */
export const MAX_EXPLAIN_CANDIDATES = 32
/** Transitions kept per deployment record (the oldest are dropped; the count is kept). */
export const MAX_DEPLOYMENT_TRANSITIONS = 200
/** Lifetime of the delegations a node gives an orchestrator actor (re-issued when older). */
export const ORCHESTRATOR_DELEGATION_MS = 24 * 3600_000
/** A provider restarted with a remote ensemble asks its orchestrator this long (backoff 1 s → 30 s) before it releases it. */
export const WANTED_ASK_BOUND_MS = 120_000
/** A revert is tried this many times, each with this deadline, before the orchestrator goes on without its confirmation. */
export const REVERT_TRIES = 3
export const REVERT_CALL_MS = 3_000
/** While it runs, a provider asks the orchestrator of every remote ensemble it holds this often whether it is still wanted (config `wantedCheckMs`). */
export const WANTED_CHECK_MS = 60_000
/**
 * A deployment completed by its tasks keeps its allocations on the providers this long (their
 * resources and ports were given back as each ended), so that their output can still be read; a
 * shutdown removes them at once.
 */
export const TASK_OUTPUT_KEEP_MS = 5 * 60_000
/**
 * Lifetime of the grant an orchestrator's node gives a provider for the status channel. It admits
 * only the channel's two messages, on this node, and the handler takes from a provider only the
 * reports of allocations placed on it; when it lapses the provider's pushes are refused and the
 * orchestrator's poll (every SUPERVISE_INTERVAL_MS) is what remains.
 */
export const STATUS_GRANT_MS = 30 * 24 * 3600_000
/** Pushed transitions kept per allocation in the deployment record (the view shows them). */
export const MAX_REPORTS_KEPT = 50
/**
 * A status report for a deployment that ended arrives after its receivers were forgotten (a
 * deliver in flight while the provider reverted): the receiver it made again is forgotten this
 * long after, once its commit is over.
 */
export const LATE_REPORT_FORGET_MS = 2_000
