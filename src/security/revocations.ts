import { z } from 'zod'
import { isDid, verifyWithDid } from '../identity/did.js'
import type { Identity } from '../identity/identity.js'
import { sublevel, type Db } from '../store/db.js'
import { Overloaded } from '../lib/errors.js'
import { REVOCATION_UNKNOWN_EXPIRY_RETENTION_MS, REVOCATIONS_MAX, REVOCATIONS_PER_ISSUER_MAX, REVOCATIONS_SUBLEVEL, REVOKE_PREFIX } from './constants.js'
import { invalidToken, unauthorized } from './reasons.js'
import { decodeToken, tokenId } from './ucan.js'

/**
 * A revocation (UCAN 0.8.1 §6.6): the issuer of a token signs `"REVOKE:" + <token CID>`. It is
 * self-authenticating — anyone can check it with the issuer's DID alone — which is why it may
 * travel over gossip with no capability (specs/capabilities.md, "Revocation").
 *
 * A record names a token by id only, so a forged record (someone revoking a token they did not
 * issue) is harmless: records are indexed by (id, iss) and a token is revoked only by a record
 * whose `iss` is the token's own issuer. `token` is optional: when present the receiver also
 * checks that it is the named token and that `iss` issued it.
 */
export const RevocationRecordSchema = z.strictObject({
  iss: z.string().max(256).refine(isDid, 'not an Ed25519 did:key'),
  /** Id (CID) of the revoked token. */
  revoke: z.string().min(8).max(128),
  /** base64url Ed25519 signature by `iss` over `REVOKE:<revoke>`. */
  challenge: z.string().max(128).regex(/^[A-Za-z0-9_-]+$/),
  token: z.string().max(64 * 1024).optional()
})
export type RevocationRecord = z.infer<typeof RevocationRecordSchema>

const enc = new TextEncoder()

/** Signs a revocation of `jwt`. Only its issuer may: throws `Unauthorized` (`not-issuer`). */
export function createRevocation (issuer: Identity, jwt: string): RevocationRecord {
  const token = decodeToken(jwt)
  if (token.payload.iss !== issuer.did) throw unauthorized('not-issuer', `only the issuer of a token may revoke it: it was issued by ${token.payload.iss}, not by ${issuer.did}`)
  const id = tokenId(jwt)
  const challenge = Buffer.from(issuer.sign(enc.encode(REVOKE_PREFIX + id))).toString('base64url')
  return { iss: issuer.did, revoke: id, challenge, token: jwt }
}

/** Checks a record's signature and, when it carries the token, that it is the issuer's. */
export function verifyRevocation (record: RevocationRecord): void {
  const sig = new Uint8Array(Buffer.from(record.challenge, 'base64url'))
  if (!verifyWithDid(record.iss, enc.encode(REVOKE_PREFIX + record.revoke), sig)) {
    throw invalidToken('bad-signature', `the revocation of ${record.revoke} is not signed by ${record.iss}`)
  }
  if (record.token !== undefined) {
    if (tokenId(record.token) !== record.revoke) throw invalidToken('malformed', 'the revocation carries a token other than the one it names')
    if (decodeToken(record.token).payload.iss !== record.iss) throw invalidToken('not-issuer', `only the issuer of a token may revoke it; ${record.iss} did not issue ${record.revoke}`)
  }
}

function key (id: string, iss: string): string {
  return `${id}!${iss}`
}

/** What the store asks of the node's capability layer before keeping a record. */
export interface RevocationPolicy {
  /** Whether `iss` issued a link of a chain this node holds (anchors) or has verified (cache). */
  knowsIssuer: (iss: string) => boolean
  /** The revoked token's expiry (unix ms), when a chain this node knows contains it. */
  expiryOf: (id: string) => number | undefined
}

export interface RevocationStoreInit {
  db?: Db
  now?: () => number
  /** Absent: every verified record is kept (tests, the CLI). */
  policy?: RevocationPolicy
  max?: number
  perIssuerMax?: number
}

/** A record and the time it may be forgotten (its token's expiry). */
const StoredSchema = z.object({ record: RevocationRecordSchema, until: z.number() })
type Stored = z.infer<typeof StoredSchema>

/**
 * Revocations this node has heard of: kept in level (sublevel `cap-revocations`) so they survive
 * restarts, mirrored in memory so the hot path never touches the disk. Without a db (tests, the
 * CLI) it is memory-only.
 *
 * Bounded (specs/capabilities.md, "Revocation"): a record heard from the network is kept only when
 * its issuer is known here (`policy.knowsIssuer`), until the revoked token's own expiry, and
 * within REVOCATIONS_MAX records in all and REVOCATIONS_PER_ISSUER_MAX per issuer; past those it
 * is refused with `Overloaded` (dropping another record would revive a revoked token). A record
 * added by an authorized local call (`trusted`) skips the issuer rule, not the bounds.
 */
export class RevocationStore {
  private readonly records = new Map<string, Stored>()
  private readonly perIssuer = new Map<string, number>()
  private readonly listeners = new Set<(id: string, iss: string) => void>()
  private readonly level: ReturnType<typeof sublevel<unknown>> | undefined
  private readonly now: () => number
  private policy: RevocationPolicy | undefined
  private readonly max: number
  private readonly perIssuerMax: number

  constructor (init: RevocationStoreInit = {}) {
    this.level = init.db !== undefined ? sublevel<unknown>(init.db, REVOCATIONS_SUBLEVEL) : undefined
    this.now = init.now ?? Date.now
    this.policy = init.policy
    this.max = init.max ?? REVOCATIONS_MAX
    this.perIssuerMax = init.perIssuerMax ?? REVOCATIONS_PER_ISSUER_MAX
  }

  /** The policy comes from the authorizer, which itself reads this store: set once both exist. */
  setPolicy (policy: RevocationPolicy): void { this.policy = policy }

  async load (): Promise<void> {
    if (this.level === undefined) return
    const stale: string[] = []
    for await (const [k, v] of this.level.iterator()) {
      // Records of the first format were stored bare: their token tells the expiry, if carried.
      const stored = StoredSchema.safeParse(v)
      const s: Stored | undefined = stored.success
        ? stored.data
        : (() => { const r = RevocationRecordSchema.safeParse(v); return r.success ? { record: r.data, until: this.expiryFor(r.data) } : undefined })()
      if (s === undefined || s.until <= this.now()) { stale.push(k); continue }
      this.keep(k, s)
    }
    if (stale.length > 0) await this.level.batch(stale.map(k => ({ type: 'del' as const, key: k })))
  }

  get size (): number { return this.records.size }

  /** Whether the issuer `iss` revoked the token `id`. */
  has (id: string, iss: string): boolean {
    return this.records.size > 0 && this.records.has(key(id, iss))
  }

  /** Calls `fn` with each record newly added (already in force then). */
  onAdded (fn: (id: string, iss: string) => void): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }

  /**
   * What the gossip validator answers for a record, storing nothing: `reject` when it is forged,
   * `ignore` when it is known already, from an unknown issuer, or over the bounds.
   */
  check (record: RevocationRecord): 'accept' | 'reject' | 'ignore' {
    try { verifyRevocation(record) } catch { return 'reject' }
    if (this.has(record.revoke, record.iss)) return 'ignore'
    if (this.policy !== undefined && !this.policy.knowsIssuer(record.iss)) return 'ignore'
    return this.room(record.iss) === undefined ? 'accept' : 'ignore'
  }

  /**
   * Verifies and stores a record. Resolves false when it was already known, or when its token
   * has expired (there is nothing left to revoke). Throws `InvalidToken` for a forged record,
   * `Unauthorized` (`unknown-issuer`) for an issuer this node knows nothing of (unless `trusted`),
   * `Overloaded` past the bounds.
   */
  async add (record: RevocationRecord, opts: { trusted?: boolean } = {}): Promise<boolean> {
    verifyRevocation(record)
    const k = key(record.revoke, record.iss)
    if (this.records.has(k)) return false
    if (opts.trusted !== true && this.policy !== undefined && !this.policy.knowsIssuer(record.iss)) {
      throw unauthorized('unknown-issuer', `${record.iss} issued no chain this node holds or has seen: its revocations are not kept here`)
    }
    const until = this.expiryFor(record)
    if (until <= this.now()) return false
    const full = this.room(record.iss)
    if (full !== undefined) throw new Overloaded(full, { retryAfterMs: 60_000 })
    const s: Stored = { record, until }
    await this.level?.put(k, s)
    this.keep(k, s)
    for (const fn of this.listeners) fn(record.revoke, record.iss)
    return true
  }

  private expiryFor (record: RevocationRecord): number {
    if (record.token !== undefined) {
      try { return decodeToken(record.token).payload.exp * 1000 } catch { /* verifyRevocation checked it */ }
    }
    return this.policy?.expiryOf(record.revoke) ?? this.now() + REVOCATION_UNKNOWN_EXPIRY_RETENTION_MS
  }

  /** Undefined when a record of `iss` fits; else why not. Expired records make room first. */
  private room (iss: string): string | undefined {
    if (this.records.size >= this.max || (this.perIssuer.get(iss) ?? 0) >= this.perIssuerMax) this.purge()
    if (this.records.size >= this.max) return `this node holds ${this.records.size} revocation records, its limit`
    if ((this.perIssuer.get(iss) ?? 0) >= this.perIssuerMax) return `this node holds ${this.perIssuerMax} revocation records of ${iss}, the limit per issuer`
    return undefined
  }

  private keep (k: string, s: Stored): void {
    this.records.set(k, s)
    this.perIssuer.set(s.record.iss, (this.perIssuer.get(s.record.iss) ?? 0) + 1)
  }

  /** Forgets records whose token expired (in memory now, on disk in the background). */
  private purge (): void {
    const now = this.now()
    const gone: string[] = []
    for (const [k, s] of this.records) {
      if (s.until > now) continue
      this.records.delete(k)
      const n = (this.perIssuer.get(s.record.iss) ?? 1) - 1
      if (n <= 0) this.perIssuer.delete(s.record.iss); else this.perIssuer.set(s.record.iss, n)
      gone.push(k)
    }
    if (gone.length > 0 && this.level !== undefined) {
      this.level.batch(gone.map(k => ({ type: 'del' as const, key: k }))).catch(() => { /* reloaded as stale next start */ })
    }
  }
}
