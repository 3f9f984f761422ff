import { MAX_CHAIN_LINKS } from './constants.js'
import { firstWidened } from './paths.js'
import { invalidToken } from './reasons.js'
import { decodeToken, lifetimeWithin, tokenId, verifySignature, type Token } from './ucan.js'

/**
 * A dms delegation chain whose every link was checked once, independently of time and of any
 * context's anchors: this is what the authorizer caches, keyed by the leaf's JWT text.
 */
export interface VerifiedChain {
  /** Leaf first, then its proof, its proof's proof, ... up to the chain's root token. */
  readonly links: readonly Token[]
  /** Token ids (CIDs), in the order of `links`. */
  readonly ids: readonly string[]
  /** Latest `nbf` in the chain (unix s): the chain is usable from then. */
  readonly notBefore: number | undefined
  /** Earliest `exp` in the chain (unix s): the chain is unusable from then. */
  readonly expiresAt: number
}

/**
 * Checks that `child` is an attenuation of `parent` (its one proof): addressed to its issuer,
 * no capability, topic, lifetime, node or depth wider than the parent's. Throws `InvalidToken`.
 */
export function checkLink (parent: Token, child: Token): void {
  if (parent.payload.aud !== child.payload.iss) {
    throw invalidToken('broken-chain', `a proof was issued to ${parent.payload.aud}, not to ${child.payload.iss} who delegates from it`)
  }
  const p = parent.grant
  const c = child.grant
  const cap = firstWidened(p.caps, c.caps)
  if (cap !== undefined) throw invalidToken('widened', `a delegation claims capability ${cap}, which its proof does not grant`, { detail: 'capability', path: cap })
  const topic = firstWidened(p.topics, c.topics)
  if (topic !== undefined) throw invalidToken('widened', `a delegation claims topic ${topic}, which its proof does not grant`, { detail: 'topic', path: topic })
  if (!lifetimeWithin(parent, child)) throw invalidToken('widened', 'a delegation outlives its proof (exp later, or nbf earlier)', { detail: 'lifetime' })
  if (p.node !== undefined && c.node !== p.node) throw invalidToken('widened', `a delegation drops or changes its proof's target node ${p.node}`, { detail: 'node' })
  if (p.depth !== undefined) {
    if (p.depth === 0) throw invalidToken('depth-exceeded', `a token issued by ${parent.payload.iss} to ${parent.payload.aud} may not be delegated further (depth 0)`)
    if (c.depth === undefined || c.depth > p.depth - 1) throw invalidToken('widened', `a delegation allows depth ${c.depth ?? 'unlimited'}, its proof at most ${p.depth - 1}`, { detail: 'depth' })
  }
}

/**
 * Verifies a dms chain from its leaf: each link decoded, its signature checked, and each link an
 * attenuation of its single proof (dms tokens carry at most one: rights amplification across
 * several proofs is not part of dms's model). Time, revocation and anchoring are the caller's:
 * they change while the cached result does not. Throws `InvalidToken`.
 */
export async function verifyChain (leaf: Token | string): Promise<VerifiedChain> {
  let t = typeof leaf === 'string' ? decodeToken(leaf) : leaf
  await verifySignature(t)
  const links: Token[] = [t]
  let notBefore = t.payload.nbf
  while (t.payload.prf.length > 0) {
    if (t.payload.prf.length > 1) throw invalidToken('broken-chain', `a dms token carries one proof, this one ${t.payload.prf.length}`)
    if (links.length >= MAX_CHAIN_LINKS) throw invalidToken('too-deep', `the chain has more than ${MAX_CHAIN_LINKS} links`, { limit: MAX_CHAIN_LINKS })
    const parent = decodeToken(t.payload.prf[0])
    // The parent's own signature first: a tampered link reads as tampered, not as a widening.
    await verifySignature(parent)
    checkLink(parent, t)
    if (parent.payload.nbf !== undefined) notBefore = Math.max(notBefore ?? 0, parent.payload.nbf)
    links.push(parent)
    t = parent
  }
  // Lifetimes nest (checkLink), so the leaf expires first.
  return { links, ids: links.map(l => tokenId(l.jwt)), notBefore, expiresAt: links[0].payload.exp }
}
