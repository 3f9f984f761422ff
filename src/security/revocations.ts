import { z } from 'zod'
import { isDid, verifyWithDid } from '../identity/did.js'
import type { Identity } from '../identity/identity.js'
import { sublevel, type Db } from '../store/db.js'
import { REVOCATIONS_SUBLEVEL, REVOKE_PREFIX } from './constants.js'
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

/**
 * Revocations this node has heard of: kept in level (sublevel `cap-revocations`) so they survive
 * restarts, mirrored in a Set so the hot path never touches the disk. Without a db (tests, the
 * CLI) it is memory-only.
 */
export class RevocationStore {
  private readonly keys = new Set<string>()
  private readonly listeners = new Set<() => void>()
  private readonly level: ReturnType<typeof sublevel<RevocationRecord>> | undefined

  constructor (db?: Db) {
    this.level = db !== undefined ? sublevel<RevocationRecord>(db, REVOCATIONS_SUBLEVEL) : undefined
  }

  async load (): Promise<void> {
    if (this.level === undefined) return
    for await (const k of this.level.keys()) this.keys.add(k)
  }

  get size (): number { return this.keys.size }

  /** Whether the issuer `iss` revoked the token `id`. */
  has (id: string, iss: string): boolean {
    return this.keys.size > 0 && this.keys.has(key(id, iss))
  }

  onChange (fn: () => void): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }

  /** Verifies and stores a record. Resolves false when it was already known. */
  async add (record: RevocationRecord): Promise<boolean> {
    verifyRevocation(record)
    const k = key(record.revoke, record.iss)
    if (this.keys.has(k)) return false
    await this.level?.put(k, record)
    this.keys.add(k)
    for (const fn of this.listeners) fn()
    return true
  }
}
