import { InvalidToken, Unauthorized } from '../lib/errors.js'

/**
 * Why a token or an invocation is refused. Travels as the `reason` field of `Unauthorized` (an
 * invocation refused) or `InvalidToken` (a token refused outside an invocation, e.g. by the CLI).
 * Tests assert on these, never on message text. specs/capabilities.md lists them in check order.
 */
export type Reason =
  | 'no-proof' // not a root, and no token attached
  | 'too-large' // token text over MAX_TOKEN_BYTES
  | 'malformed' // not a JWT, bad base64url/JSON, fields of the wrong type, unsupported ucv/typ
  | 'unknown-alg' // `alg` other than EdDSA
  | 'bad-did' // iss/aud is not an Ed25519 did:key (wrong multicodec, bad base58)
  | 'bad-signature' // the signature does not verify with the issuer's key
  | 'too-deep' // more than MAX_CHAIN_LINKS links
  | 'broken-chain' // a proof's audience is not the issuer of the token it supports; >1 proof
  | 'widened' // a link claims more than its proof: capability, topic, lifetime, node or depth
  | 'depth-exceeded' // a link below a token whose depth is 0
  | 'wrong-subject' // the leaf token was issued to someone else than the invoker
  | 'expired' // some link's `exp` has passed
  | 'not-yet-valid' // some link's `nbf` is in the future
  | 'revoked' // a link was revoked (by its issuer, or by this context's revoke anchors)
  | 'wrong-audience' // the chain is restricted to another node
  | 'not-anchored' // no link was issued by a root of this context or a required foreign root
  | 'not-covered' // a valid chain that does not grant this capability or topic
  | 'not-issuer' // only a token's issuer may revoke it
  | 'not-held' // delegation of more than the delegator holds
  | 'unknown-issuer' // a revocation by an issuer of no chain this node holds or has seen

export function invalidToken (reason: Reason, message: string, fields: Record<string, string | number> = {}): InvalidToken {
  return new InvalidToken(message, { ...fields, reason })
}

export function unauthorized (reason: Reason, message: string, fields: Record<string, string | number> = {}): Unauthorized {
  return new Unauthorized(message, { ...fields, reason })
}

/** The reason carried by a refusal from this layer, if it is one. */
export function reasonOf (err: unknown): Reason | undefined {
  if ((err instanceof InvalidToken || err instanceof Unauthorized) && typeof err.fields.reason === 'string') return err.fields.reason as Reason
  return undefined
}

/** An `InvalidToken` from decoding becomes the `Unauthorized` an invocation answers with. */
export function asUnauthorized (err: unknown): Unauthorized {
  if (err instanceof Unauthorized) return err
  if (err instanceof InvalidToken) return new Unauthorized(err.message, err.fields)
  return new Unauthorized(err instanceof Error ? err.message : String(err), { reason: 'malformed' })
}
