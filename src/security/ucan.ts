import { createHash, randomBytes } from 'node:crypto'
import { Plugins, capability as ucanCapability, getPluginInjectedApi, type DidKeyPlugin, type UcanPayload } from '@ucans/core'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { z } from 'zod'
import { publicKeyFromDid, verifyWithDid, type Did } from '../identity/did.js'
import type { Identity } from '../identity/identity.js'
import {
  ABILITY_BROADCAST, ABILITY_INVOKE, DMS_FACT, DMS_SCHEME, MAX_CHAIN_LINKS, MAX_GRANTS, MAX_TOKEN_BYTES,
  UCAN_ALG, UCAN_VERSION_ACCEPTED
} from './constants.js'
import { isPath } from './paths.js'
import { invalidToken } from './reasons.js'

/**
 * UCAN 0.8.1 tokens (JWT) through `@ucans/core`'s plugin API, with dms's own strict decoder.
 *
 * - Signing goes through `@ucans/core`'s `sign`, which also checks the issuer's key type against
 *   `alg` with the plugins; the signature itself comes from the `Identity` (node:crypto).
 * - Verification uses a `DidKeyPlugin` backed by node:crypto (0.18 ms per Ed25519 verify) instead
 *   of the stock pure-JS one (~10 ms), registered with `Plugins` as the only key type: dms keys
 *   are all Ed25519, so any other `alg` or did:key codec is refused.
 * - Decoding is our own: `@ucans/core`'s `parse` accepts what the 0.8.1 fixtures call invalid
 *   (resources without a scheme, abilities without a namespace, `typ` other than JWT, unpadded
 *   garbage in base64url) and reports failures as untyped strings. Ours throws `InvalidToken`
 *   with a `reason` (reasons.ts).
 */

const ED25519_PREFIX = new Uint8Array([0xed, 0x01])

/** Ed25519 did:key verification with node:crypto (the key object is cached per DID in did.ts). */
export const nodeEd25519Plugin: DidKeyPlugin = {
  prefix: ED25519_PREFIX,
  jwtAlg: UCAN_ALG,
  verifySignature: async (did: string, data: Uint8Array, sig: Uint8Array) => verifyWithDid(did, data, sig)
}

export const plugins = new Plugins([nodeEd25519Plugin], {})
const ucans = getPluginInjectedApi(plugins)

// ---- token model -------------------------------------------------------------------------

export interface EncodedCapability { with: string, can: string }

export interface TokenHeader { alg: string, typ: string, ucv: string }

export interface TokenPayload {
  iss: Did
  aud: Did
  /** Expiry, unix seconds. */
  exp: number
  /** Not before, unix seconds. */
  nbf?: number
  nnc?: string
  att: EncodedCapability[]
  fct?: Array<Record<string, unknown>>
  /** Proofs: whole JWTs inline (0.8.1). */
  prf: string[]
}

/** The dms reading of a token's capabilities (specs/capabilities.md, "Token shape"). */
export interface Grant {
  /** Behaviour paths: `{with: "dms:<path>", can: "dms/invoke"}`. */
  caps: string[]
  /** Topic paths: `{with: "dms:<topic>", can: "dms/broadcast"}`. */
  topics: string[]
  /** Target node: the token may only be used on this node (fact `dms.node`). */
  node?: Did
  /** Further delegation allowed below this token (fact `dms.depth`); absent = unlimited. */
  depth?: number
}

export interface Token {
  readonly jwt: string
  readonly header: TokenHeader
  readonly payload: TokenPayload
  readonly grant: Grant
  /** `header.payload` bytes: what the signature covers. */
  readonly signedData: Uint8Array
  readonly signature: Uint8Array
}

// ---- decoding ----------------------------------------------------------------------------

const B64URL = /^[A-Za-z0-9_-]+$/
const utf8 = new TextDecoder('utf-8', { fatal: true })
const enc = new TextEncoder()

const Seconds = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)
const Record_ = z.custom<Record<string, unknown>>(v => typeof v === 'object' && v !== null && !Array.isArray(v), 'expected a JSON object')
const HeaderSchema = z.object({ alg: z.string(), typ: z.string(), ucv: z.string() })
const PayloadSchema = z.object({
  iss: z.string(),
  aud: z.string(),
  exp: Seconds,
  nbf: Seconds.optional(),
  nnc: z.string().optional(),
  att: z.array(z.object({ with: z.string(), can: z.string() })),
  fct: z.array(Record_).optional(),
  prf: z.array(z.string())
})
const DmsFactSchema = z.strictObject({
  node: z.string().optional(),
  depth: z.number().int().nonnegative().max(MAX_CHAIN_LINKS).optional()
})

/** RFC 3986 scheme followed by something: `db://x`, `dms:/a`, `prf:0`. */
const URI = /^[A-Za-z][A-Za-z0-9+.-]*:.+$/
/** `*`, or `namespace/ability` (0.8.1 §3.2.2: abilities are namespaced). */
const ABILITY = /^\*$|^[^/\s]+\/[^\s]+$/

function jsonPart (part: string, what: string): unknown {
  if (!B64URL.test(part)) throw invalidToken('malformed', `the token's ${what} is not base64url`)
  let text: string
  try { text = utf8.decode(Buffer.from(part, 'base64url')) } catch { throw invalidToken('malformed', `the token's ${what} is not UTF-8`) }
  try { return JSON.parse(text) } catch { throw invalidToken('malformed', `the token's ${what} is not JSON`) }
}

function checkDid (did: string, field: 'iss' | 'aud'): Did {
  try { publicKeyFromDid(did) } catch {
    throw invalidToken('bad-did', `the token's ${field} is not an Ed25519 did:key: '${did.slice(0, 80)}'`, { field })
  }
  return did as Did
}

function grantOf (payload: TokenPayload): Grant {
  const caps: string[] = []
  const topics: string[] = []
  for (const a of payload.att) {
    // Capabilities of other schemes are not dms's: they grant nothing here and are left alone.
    if (a.with.slice(0, DMS_SCHEME.length + 1).toLowerCase() !== `${DMS_SCHEME}:`) continue
    const path = a.with.slice(DMS_SCHEME.length + 1)
    const can = a.can.toLowerCase()
    if (can !== ABILITY_INVOKE && can !== ABILITY_BROADCAST) throw invalidToken('malformed', `unknown dms ability '${a.can.slice(0, 40)}' (expected ${ABILITY_INVOKE} or ${ABILITY_BROADCAST})`)
    if (!isPath(path)) throw invalidToken('malformed', `'${a.with.slice(0, 80)}' does not name a dms path`)
    ;(can === ABILITY_INVOKE ? caps : topics).push(path)
  }
  if (caps.length + topics.length > MAX_GRANTS) throw invalidToken('malformed', `the token lists ${caps.length + topics.length} dms capabilities; at most ${MAX_GRANTS}`)
  const grant: Grant = { caps, topics }
  const facts = (payload.fct ?? []).filter(f => Object.hasOwn(f, DMS_FACT))
  if (facts.length > 1) throw invalidToken('malformed', `the token has ${facts.length} '${DMS_FACT}' facts; at most one`)
  if (facts.length === 1) {
    const r = DmsFactSchema.safeParse(facts[0][DMS_FACT])
    if (!r.success) throw invalidToken('malformed', `the token's '${DMS_FACT}' fact is malformed: ${r.error.issues[0]?.message ?? ''}`)
    if (r.data.node !== undefined) {
      try { publicKeyFromDid(r.data.node) } catch { throw invalidToken('bad-did', `the token's target node is not an Ed25519 did:key: '${r.data.node.slice(0, 80)}'`, { field: 'node' }) }
      grant.node = r.data.node as Did
    }
    if (r.data.depth !== undefined) grant.depth = r.data.depth
  }
  return grant
}

/**
 * Decodes one token without checking its signature or time. Throws `InvalidToken` with reason
 * `too-large`, `malformed`, `unknown-alg` or `bad-did`. Inline proofs are left undecoded.
 */
export function decodeToken (jwt: unknown): Token {
  if (typeof jwt !== 'string') throw invalidToken('malformed', 'a token is a JWT string')
  if (jwt.length > MAX_TOKEN_BYTES) throw invalidToken('too-large', `token of ${jwt.length} bytes; the limit is ${MAX_TOKEN_BYTES}`, { limit: MAX_TOKEN_BYTES })
  const parts = jwt.split('.')
  if (parts.length !== 3) throw invalidToken('malformed', `a JWT has 3 dot-separated parts, this has ${parts.length}`)
  const h = HeaderSchema.safeParse(jsonPart(parts[0], 'header'))
  if (!h.success) throw invalidToken('malformed', `the token's header is malformed: ${h.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).slice(0, 2).join('; ')}`)
  const header = h.data
  if (header.alg !== UCAN_ALG) throw invalidToken('unknown-alg', `unsupported token algorithm '${header.alg.slice(0, 20)}' (dms accepts ${UCAN_ALG})`, { alg: header.alg.slice(0, 20) })
  if (header.typ !== 'JWT') throw invalidToken('malformed', `token typ must be 'JWT', got '${header.typ.slice(0, 20)}'`)
  if (!UCAN_VERSION_ACCEPTED.test(header.ucv)) throw invalidToken('malformed', `unsupported UCAN version '${header.ucv.slice(0, 20)}' (dms reads 0.8.x)`)
  const p = PayloadSchema.safeParse(jsonPart(parts[1], 'payload'))
  if (!p.success) throw invalidToken('malformed', `the token's payload is malformed: ${p.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).slice(0, 2).join('; ')}`)
  const raw = p.data
  const payload: TokenPayload = { ...raw, iss: checkDid(raw.iss, 'iss'), aud: checkDid(raw.aud, 'aud') }
  for (const a of payload.att) {
    if (!URI.test(a.with)) throw invalidToken('malformed', `capability resource '${a.with.slice(0, 80)}' is not a URI`)
    if (!ABILITY.test(a.can)) throw invalidToken('malformed', `capability ability '${a.can.slice(0, 40)}' is not namespaced (ns/ability)`)
    // `prf:<n>` selects a proof by index: it must exist (0.8.1 §3.2.3).
    if (a.with.slice(0, 4).toLowerCase() === 'prf:') {
      const sel = a.with.slice(4)
      if (sel !== '*' && !(/^(0|[1-9]\d*)$/.test(sel) && Number(sel) < payload.prf.length)) throw invalidToken('broken-chain', `capability '${a.with.slice(0, 40)}' names a proof the token does not carry`)
    }
  }
  if (!B64URL.test(parts[2])) throw invalidToken('malformed', 'the token\'s signature is not base64url')
  const signature = new Uint8Array(Buffer.from(parts[2], 'base64url'))
  if (signature.length !== 64) throw invalidToken('malformed', `an Ed25519 signature has 64 bytes, this one ${signature.length}`)
  return {
    jwt,
    header,
    payload,
    grant: grantOf(payload),
    signedData: enc.encode(`${parts[0]}.${parts[1]}`),
    signature
  }
}

/** Checks the issuer's signature through the plugins. Throws `InvalidToken` (`bad-signature`). */
export async function verifySignature (token: Token): Promise<void> {
  let ok: boolean
  try {
    ok = plugins.verifyIssuerAlg(token.payload.iss, token.header.alg) &&
      await plugins.verifySignature(token.payload.iss, token.signedData, token.signature)
  } catch {
    ok = false
  }
  if (!ok) throw invalidToken('bad-signature', `the signature of a token issued by ${token.payload.iss} does not verify`)
}

/** Time window check at `nowMs`. Throws `InvalidToken` (`expired`, `not-yet-valid`). */
export function checkTime (token: Token, nowMs: number): void {
  if (token.payload.exp * 1000 <= nowMs) throw invalidToken('expired', `a token issued by ${token.payload.iss} expired at ${new Date(token.payload.exp * 1000).toISOString()}`, { exp: token.payload.exp })
  if (token.payload.nbf !== undefined && token.payload.nbf * 1000 > nowMs) throw invalidToken('not-yet-valid', `a token issued by ${token.payload.iss} is not valid before ${new Date(token.payload.nbf * 1000).toISOString()}`, { nbf: token.payload.nbf })
}

/** Lifetime of `child` within that of its proof (0.8.1 §3.2.4: a delegation cannot outlive). */
export function lifetimeWithin (parent: Token, child: Token): boolean {
  if (child.payload.exp > parent.payload.exp) return false
  if (parent.payload.nbf !== undefined && (child.payload.nbf === undefined || child.payload.nbf < parent.payload.nbf)) return false
  return true
}

/**
 * Generic UCAN 0.8.1 verification of a token and, recursively, its inline proofs: structure,
 * algorithm, DIDs, signatures, time at `nowMs`, proof addressing (proof `aud` = `iss`) and
 * lifetime nesting. It applies no dms semantics (those are in chain.ts) and is what the spec
 * fixtures are run through. Throws `InvalidToken`.
 */
export async function verifyToken (jwt: string, opts: { now: number }): Promise<Token> {
  let budget = MAX_CHAIN_LINKS * 4
  const visit = async (s: string, depth: number): Promise<Token> => {
    if (depth > MAX_CHAIN_LINKS || --budget < 0) throw invalidToken('too-deep', `proofs nest deeper than ${MAX_CHAIN_LINKS} links`)
    const t = decodeToken(s)
    await verifySignature(t)
    checkTime(t, opts.now)
    for (const prf of t.payload.prf) {
      const parent = await visit(prf, depth + 1)
      if (parent.payload.aud !== t.payload.iss) throw invalidToken('broken-chain', `a proof was issued to ${parent.payload.aud}, not to the token's issuer ${t.payload.iss}`)
      if (!lifetimeWithin(parent, t)) throw invalidToken('widened', 'a token lives outside the lifetime of its proof', { detail: 'lifetime' })
    }
    return t
  }
  return await visit(jwt, 1)
}

// ---- identifiers ------------------------------------------------------------------------------

const RAW_CODEC = 0x55
const SHA2_256 = 0x12

/**
 * A token's id: CIDv1 (raw codec, sha2-256) of its JWT bytes, the UCAN convention for naming a
 * token in revocations (0.8.1 §6.6). String form: base32 `bafkrei...`.
 */
export function tokenId (jwt: string): string {
  const digest = createHash('sha256').update(jwt, 'utf8').digest()
  return CID.create(1, RAW_CODEC, Digest.create(SHA2_256, digest)).toString()
}

// ---- building -------------------------------------------------------------------------------

export interface TokenInit {
  /** Subject: who the token is issued to (UCAN `aud`). */
  audience: string
  caps: readonly string[]
  topics?: readonly string[]
  /** Target node the token may be used on (fact `dms.node`). */
  node?: string
  depth?: number
  /** Expiry, unix seconds. */
  exp: number
  /** Not before, unix seconds. */
  nbf?: number
  /** Proof (the parent token), for a delegation. */
  proof?: string
}

/** The att list of a grant, in the token shape of specs/capabilities.md. */
export function attOf (caps: readonly string[], topics: readonly string[] = []): EncodedCapability[] {
  return [
    ...caps.map(c => ({ with: `${DMS_SCHEME}:${c}`, can: ABILITY_INVOKE })),
    ...topics.map(t => ({ with: `${DMS_SCHEME}:${t}`, can: ABILITY_BROADCAST }))
  ]
}

/**
 * Builds and signs a token with an Identity, through `@ucans/core`'s `sign` (which checks the
 * issuer's key type against `alg` with the plugins). Returns the JWT.
 */
export async function issueToken (issuer: Identity, init: TokenInit): Promise<string> {
  const dms: Record<string, unknown> = {}
  if (init.node !== undefined) dms.node = init.node
  if (init.depth !== undefined) dms.depth = init.depth
  const payload: UcanPayload = {
    iss: issuer.did,
    aud: init.audience,
    nbf: init.nbf,
    exp: init.exp,
    // A nonce makes every issued token distinct, so revoking one never revokes a twin.
    nnc: randomBytes(9).toString('base64url'),
    att: attOf(init.caps, init.topics).map(c => ucanCapability.parse(c)),
    fct: Object.keys(dms).length > 0 ? [{ [DMS_FACT]: dms }] : undefined,
    prf: init.proof !== undefined ? [init.proof] : []
  }
  const ucan = await ucans.sign(payload, UCAN_ALG, async (data) => issuer.sign(data))
  const jwt = `${ucan.signedData}.${ucan.signature}`
  // Refuse to hand out what we would refuse to read.
  decodeToken(jwt)
  return jwt
}
