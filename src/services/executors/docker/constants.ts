/** Labels on every container the docker executor creates: `list()` and recovery find them by these. */
export const LABEL_NODE = 'dms.node'
export const LABEL_ALLOCATION = 'dms.allocation'
/**
 * Where the workload's output goes, so that a daemon restarted after `kill -9` can re-attach the
 * log follower from the container alone (a `WorkloadRef` carries no paths).
 */
export const LABEL_STDOUT = 'dms.stdout'
export const LABEL_STDERR = 'dms.stderr'
export const LABEL_DIR = 'dms.dir'

/** Engine address when neither the init nor `DOCKER_HOST` names one (Docker's own default). */
export const DEFAULT_DOCKER_HOST = 'unix:///var/run/docker.sock'

/**
 * Host address published ports bind on. A workload's ports are leased by the port allocator so
 * that peers can reach the workload, as they reach the node's own libp2p listener on 0.0.0.0; the
 * allocator checks a port free on 0.0.0.0 and 127.0.0.1, so either is safe to bind.
 */
export const DEFAULT_HOST_IP = '0.0.0.0'

/**
 * Bound on an engine request that answers at once (inspect, create, start, kill, remove, list).
 * Starting a container through podman takes ~0.2–0.5 s here; 30 s is far past any healthy engine
 * and short enough that a wedged one fails the allocation rather than hanging it.
 */
export const REQUEST_TIMEOUT_MS = 30_000

/** Bound on `probe()`'s ping: the engine answers in milliseconds when it runs at all. */
export const PROBE_TIMEOUT_MS = 3_000

/** Docker refuses a memory limit under 6 MiB (`Minimum memory limit allowed is 6MB`). */
export const MIN_MEMORY_BYTES = 6 * 1024 * 1024

/**
 * After the engine reports the container ended, how long `wait()` waits for the log follower to
 * write the rest of the output. The engine ends the log stream at exit within milliseconds; the
 * bound only keeps a broken stream from holding `wait()` forever.
 */
export const LOG_DRAIN_TIMEOUT_MS = 10_000

/**
 * Re-attaching the log stream after it broke while the container still runs (the engine was
 * restarted): at most this many attempts in a row, with this pause between them.
 */
export const LOG_REATTACH_ATTEMPTS = 5
export const LOG_REATTACH_DELAY_MS = 500

/** File in the allocation's directory where the log follower keeps its resume point. */
export const LOG_STATE_FILE = 'docker-logs.json'

/** Most output `exec()` keeps per stream; the rest is dropped (and said so in the result). */
export const EXEC_MAX_OUTPUT_BYTES = 1024 * 1024

/** Longest allocation id kept readable in a container name (names are made unique by a hash). */
export const NAME_ID_CHARS = 64

/** PATH a container gets when neither the spec nor the image sets one (Docker's and podman's default). */
export const DEFAULT_CONTAINER_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

/** Most (image, command, PATH) lookups remembered; past it the memory starts over (cheap to redo). */
export const COMMAND_CACHE_SIZE = 1024

/**
 * Inspections `list()` runs at once (the engine's list has no start times). Recovery lists once
 * per daemon start; a handful in flight keeps 100 containers to a few round trips without
 * flooding an engine that serialises much of its work (podman locks per container).
 */
export const LIST_INSPECT_CONCURRENCY = 8

/**
 * Most bytes a resuming log follower reads back from a file past its saved point, to skip output
 * it had appended just before a crash. One batch is one chunk of the engine's stream (tens of
 * KiB); more than this past the point means the file was changed by someone else.
 */
export const MAX_UNSAVED_BYTES = 8 * 1024 * 1024

/**
 * Size of the log follower's saved state, written whole at offset 0 in one write (JSON padded
 * with spaces). A state is ~200 bytes: the container id (64), a timestamp, three counts.
 */
export const LOG_STATE_RECORD_BYTES = 512

/**
 * Most output since the follower attached that it reads back at the container's exit to check
 * the followed stream against the engine's log (docker/logs.ts, reconcile). Past it, the check is
 * skipped (the lines the stream never sent are still read).
 */
export const MAX_RECONCILE_BYTES = 16 * 1024 * 1024

/**
 * Bound on looking a command up in a new container before it starts (one stat per PATH entry;
 * podman serialises them, ~0.2 s each here, several times that on a loaded machine). Past it the
 * start goes on without the check.
 */
export const COMMAND_LOOKUP_TIMEOUT_MS = 10_000
