import { MAX_HEADER_BYTES } from '../actor/envelope.js'

/** Every envelope travels on this protocol: one long-lived, varint-length-prefixed stream per peer. */
export const ACTOR_PROTOCOL = '/dms/actor/1.0.0'

/** A private Kademlia DHT: nodes of this network never mix routing tables with the public IPFS one. */
export const DEFAULT_DHT_PROTOCOL = '/nunet/kad/1.0.0'

/** Gossipsub topic and behaviour of the hello broadcast (ARCHITECTURE.md, defaults table). */
export const HELLO_TOPIC = '/nunet/hello'

export const DEFAULT_LISTEN = ['/ip4/0.0.0.0/tcp/9000']

/** Largest frame sent or accepted: big enough for a deployment's ensemble, small enough to buffer. */
export const DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024

/** The periodic hello only catches what the event-driven ones missed (e.g. a peer's restart). */
export const DEFAULT_HELLO_INTERVAL_MS = 30_000

/**
 * K of the rate-scaled hello (hello.ts, specs/membership.md): a node knowing n peers announces
 * every interval × max(1, n / K), so a network of any size publishes ~K periodic hellos per
 * interval and each node hears O(1) per second. Up to K peers nothing changes (the 20-daemon
 * convergence test, small clusters); at 32 a node hears about one periodic hello a second.
 */
export const HELLO_PEERS_PER_INTERVAL = 32

/** Each period is jittered by ± this fraction, so nodes started together spread their hellos. */
export const HELLO_JITTER = 0.25

/**
 * A peer whose hellos stopped is forgotten (unless connected) once it missed this many of its
 * periods: one lost hello (gossip loss, a partition) does not forget a live peer.
 */
export const HELLO_EXPIRY_PERIODS = 3

/**
 * Bytes kept of an oversized inbound frame: the envelope's 5-byte prefix (version + header
 * length) and the largest header, so the receiver can read who to answer (envelope.ts).
 */
export const OVERSIZE_HEAD_BYTES = MAX_HEADER_BYTES + 5

/**
 * Actor streams per protocol per connection. Normally one; a simultaneous open or a re-open
 * while the old stream is still closing briefly makes two or three. The cap keeps a peer from
 * opening streams without bound (libp2p's defaults are 32 in / 64 out).
 */
export const MAX_ACTOR_STREAMS_PER_CONNECTION = 8

/** A send that was given no signal still ends: dial + protocol negotiation + a full write buffer. */
export const DEFAULT_SEND_TIMEOUT_MS = 10_000

/** Bound on opening the actor stream (dial, address lookup, negotiation) shared by waiting sends. */
export const OPEN_STREAM_TIMEOUT_MS = 10_000

/**
 * Pause before the next actor-stream open after one failed: 100 ms, doubling per failure in a
 * row, at most 2 s. Long enough for libp2p to notice a reset connection (an open on it fails
 * without any I/O), short against any caller's deadline.
 */
export const OPEN_RETRY_MIN_MS = 100
export const OPEN_RETRY_MAX_MS = 2_000

/** DHT lookups hang without a deadline when no peer is reachable (STACK.md). */
export const FIND_PEER_TIMEOUT_MS = 5_000

/**
 * kad-dht holds every lookup until its first self-query has run, which it starts 1 s after
 * start by default: a node that must find a peer right after starting would wait that long.
 * The self-query itself still waits for a first routing-table peer.
 */
export const DHT_INITIAL_SELF_QUERY_MS = 100

/**
 * Liveness (liveness.ts): every 30 s, each connected peer that sent no actor frame in that time
 * is pinged; one that neither answers nor sends anything for 20 s has its connections closed.
 * A peer that vanished silently (its process's own exit closes its connections at once) is
 * noticed within 50 s; a busy one is never cut off. It was every 10 s: an idle node connected to
 * the 99 others of a 100-daemon network opened ~10 ping streams a second and answered as many,
 * the most frequent work of an idle daemon after gossipsub's heartbeat (issue 10).
 */
export const LIVENESS_INTERVAL_MS = 30_000
export const LIVENESS_PING_TIMEOUT_MS = 20_000

/** A dial started in the background (hello, mDNS, bootstrap) gives up after this long. */
export const BACKGROUND_DIAL_TIMEOUT_MS = 10_000

/** The greeting (`/public/hello` invoke) made in the background gives up after this long. */
export const GREET_TIMEOUT_MS = 10_000

/** Bootstrap re-dial backoff: first retry after 1 s, doubling, never more than 30 s apart. */
export const BOOTSTRAP_BACKOFF_MIN_MS = 1_000
export const BOOTSTRAP_BACKOFF_MAX_MS = 30_000

/**
 * Gossipsub's RPC decoder refuses RPCs above `maxInboundDataLength` (default 4 MiB): allow a
 * full frame plus the RPC's own envelope (signature, key, seqno, topic, control messages).
 */
export const GOSSIP_RPC_OVERHEAD_BYTES = 64 * 1024

/**
 * More than 10 streams opened right after a dial can reset a connection (STACK.md): identify,
 * ping, the DHT, gossipsub and the actor stream all open at once on a fresh connection.
 */
export const YAMUX_MAX_EARLY_STREAMS = 32

/**
 * Concurrent pings per connection. The ping service allows 1 outbound by default, but the DHT's
 * routing-table checks and libp2p's connection monitor ping too: a user's ping right after a dial
 * was refused with "too many outbound protocol streams".
 */
export const PING_STREAMS_PER_CONNECTION = 4

/** mDNS-discovered peers are dialled only while the node has fewer connections than this. */
export const DISCOVERY_DIAL_BELOW_CONNECTIONS = 32

/**
 * Application-specific gossipsub score from the hello handshake (weighted ×10 by gossipsub's
 * default `appSpecificWeight`). Mutual: we heard their hello and they greeted us or answered our
 * greeting; one-sided: only one of the two; none: zero. Positive scores only make a peer
 * preferred in the mesh; they never push a stranger below the gossip thresholds.
 */
export const HELLO_SCORE_MUTUAL = 1
export const HELLO_SCORE_ONE_SIDED = 0.5
export const HELLO_SCORE_NONE = 0

/**
 * Bounds on an announced hello: the addresses one hello may make this node store or dial (and
 * the longest one). A hello's list replaces the earlier ones in libp2p's peer store, so repeated
 * hellos cannot grow what the dialler tries.
 */
export const MAX_HELLO_ADDRS = 16
export const MAX_ADDR_LENGTH = 256

/**
 * Peers kept in the persisted peer book. A hello costs its sender one fresh key, so gossip alone
 * could grow the book without end; beyond this the least recently seen peer that is not
 * connected is evicted. Far above the connections a node holds (libp2p's maxConnections, 300).
 */
export const MAX_PEER_BOOK_ENTRIES = 10_000

/**
 * Peers whose hello handshake state is kept (hello.ts, Handshakes): the least recently touched
 * beyond this is forgotten (its gossipsub app score drops to 0, a bonus only). Well above the
 * connections a node holds, so a connected peer's state is not the one forgotten.
 */
export const MAX_HANDSHAKES = 4_096

/**
 * Background dials and greetings started by hellos at once. A burst of hellos from new peers
 * beyond this is recorded, not dialled; their next hello (every 30 s) tries again.
 */
export const MAX_PENDING_GREETINGS = 64

/**
 * Gossipsub P4 (gossip-score.ts): each message a validator rejects adds 1 to the peer's counter,
 * which scores −count² × 1 and decays ×0.99 per second (half-life ~70 s). With the thresholds
 * below, 4 rejected messages stop gossip with the peer, 8 stop publishing to it, 9 graylist it
 * (every RPC of it ignored) — for minutes, not for ever.
 */
export const GOSSIP_INVALID_MESSAGE_WEIGHT = -1
export const GOSSIP_INVALID_MESSAGE_DECAY = 0.99
/** gossipsub's own defaults, stated here because P4 above is tuned against them. */
export const GOSSIP_GOSSIP_THRESHOLD = -10
export const GOSSIP_PUBLISH_THRESHOLD = -50
export const GOSSIP_GRAYLIST_THRESHOLD = -80

/** Peers on these addresses share this machine: never penalised for sharing an IP (gossip-score.ts). */
export const LOOPBACK_IPS = ['127.0.0.1', '::1']
