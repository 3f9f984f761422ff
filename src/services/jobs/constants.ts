/** Sublevel of the node's db holding jobs this node coordinates (one record per job id). */
export const JOBS_SUBLEVEL = 'jobs'
/** Directory (under the data dir) of the parts' outputs and the reduced result, one per job. */
export const JOBS_DIR = 'jobs'
/**
 * A part's input travels inside its allocation's command (base64 in the wrapper script, see
 * job-file.ts): Linux refuses one argv string over 128 KiB (MAX_ARG_STRLEN), and base64 adds a
 * third. Larger inputs need the chunked transfer of specs/jobs.md, which is not built yet.
 */
export const MAX_PART_INPUT_BYTES = 64 * 1024
/** Parts of one job at most (each is a record entry and a deployment). */
export const MAX_PARTS = 10_000
/** Every input of one job together (the request carries them all). */
export const MAX_JOB_INPUT_BYTES = 3 * 1024 * 1024
/** Retries per part unless the file says (a non-zero exit runs it again this many times). */
export const DEFAULT_RETRIES = 2
/** Nodes at most unless the file says. */
export const DEFAULT_PARALLELISM = 8
/** A part that runs longer than this (file: `timeout`) is stopped and run elsewhere. */
export const DEFAULT_PART_TIMEOUT_MS = 10 * 60_000
/** The deadline of a part's deployment to Running (bids, commit, allocate, start). */
export const PART_DEPLOY_TIMEOUT_MS = 60_000
/** Bid window of a part's deployment: it is pinned to one provider, so it ends at that bid. */
export const PART_BID_WINDOW_MS = 2_000
/** How long candidates get to answer whether they would run a part (the job's placement). */
export const PROBE_CALL_MS = 5_000
/** A node that failed this many parts by itself (not by their exit) takes no more of the job. */
export const WORKER_MAX_FAILURES = 2
/** A part whose node failed (lost, timed out, refused) this many times fails the job. */
export const PART_MAX_PLACEMENTS = 5
/** Chunk of output read from a provider at a time (bounded memory at the origin). */
export const COLLECT_CHUNK_BYTES = 256 * 1024
/** Reads of one part's output at most (a bound on the loop: 64 GiB at the chunk above). */
export const MAX_COLLECT_READS = 256 * 1024
/** Last bytes of a failed part's stderr kept in the job's record (the whole is on disk). */
export const STDERR_TAIL_BYTES = 4 * 1024
/** The reduce step (at the origin) is stopped after this long unless the file says. */
export const DEFAULT_REDUCE_TIMEOUT_MS = 10 * 60_000
/** Transitions kept per job record (the oldest are dropped; the count is kept). */
export const MAX_JOB_TRANSITIONS = 500
/** The line the part wrapper writes last on stderr: the command's exit status. */
export const EXIT_MARKER = 'dms-part-exit='
