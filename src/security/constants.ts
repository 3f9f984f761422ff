/**
 * Constants of the capability layer, each with the reason for its value. The token shape they
 * describe is specified in specs/capabilities.md.
 */

/** The only JWT `alg` dms issues and accepts: every dms key is Ed25519 (ARCHITECTURE.md §1). */
export const UCAN_ALG = 'EdDSA'
/** UCAN spec version dms issues: the one `@ucans/ucans` 0.12 implements (JWT, inline proofs). */
export const UCAN_VERSION = '0.8.1'
/** Accepted `ucv` values: any 0.8.x (patch releases of 0.8 did not change the token format). */
export const UCAN_VERSION_ACCEPTED = /^0\.8\.(0|[1-9]\d*)$/

/** Resource scheme of a dms capability: `dms:<path>` — the path is the UCAN resource. */
export const DMS_SCHEME = 'dms'
/** Ability on a behaviour path: invoking the behaviours at or under it. */
export const ABILITY_INVOKE = 'dms/invoke'
/** Ability on a topic path: publishing to (and being delivered on) the topics at or under it. */
export const ABILITY_BROADCAST = 'dms/broadcast'
/** Key of the one fact object that carries dms's token-wide constraints (`node`, `depth`). */
export const DMS_FACT = 'dms'

/**
 * Largest token (JWT text, proofs included) looked at. Inline 0.8.1 proofs grow ~4/3 per link,
 * so a depth-8 chain is ~17 KiB; 32 KiB leaves room and keeps one refusal cheap. The envelope's
 * whole header is capped at 64 KiB (src/actor/envelope.ts).
 */
export const MAX_TOKEN_BYTES = 32 * 1024
/** Longest chain (links, leaf included). Bounds verification work per token. */
export const MAX_CHAIN_LINKS = 8
/** Most candidate tokens verified cold for one invocation (the envelope carries up to 32). */
export const MAX_CANDIDATES = 4
/** Most capability paths or topics in one token: a token is an authorization, not a catalogue. */
export const MAX_GRANTS = 64
/** Longest capability path or topic (the envelope limits behaviour paths to 512 characters). */
export const MAX_PATH_LENGTH = 512

/** Verified chains kept; beyond this the oldest are dropped (insertion order). */
export const CHAIN_CACHE_MAX = 10_000

/** Gossipsub topic revocations travel on, and the behaviour that receives them. */
export const REVOKE_TOPIC = '/nunet/revoke'
export const REVOKE_BROADCAST = '/broadcast/revoke'
/** Prefix of the challenge a revocation signs (UCAN 0.8.1 §6.6: `"REVOKE:" + CID`). */
export const REVOKE_PREFIX = 'REVOKE:'
/** Envelope lifetime of a published revocation: gossip delivers in ms, retries are not needed. */
export const REVOKE_PUBLISH_LIFETIME_MS = 30_000

/**
 * Revocation records kept at once, and per issuer. Gossip can make a node store only records of
 * issuers it knows (of chains it holds or has seen), each until the revoked token's own expiry;
 * these bounds cap what even a known issuer can make it hold. Past them a record is refused with
 * Overloaded, never by evicting another: a dropped record would revive a revoked token.
 */
export const REVOCATIONS_MAX = 10_000
export const REVOCATIONS_PER_ISSUER_MAX = 1_000
/**
 * How long a record is kept when the revoked token's expiry is unknown here (the record does not
 * carry the token and no chain this node knows contains it). `dms cap revoke` always includes
 * the token, so this only applies to records made by other tools.
 */
export const REVOCATION_UNKNOWN_EXPIRY_RETENTION_MS = 90 * 24 * 3600_000

/** Level sublevel holding received revocation records. */
export const REVOCATIONS_SUBLEVEL = 'cap-revocations'
