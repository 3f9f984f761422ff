import { CHAIN_CACHE_MAX, MAX_CANDIDATES } from './constants.js'
import { verifyChain, type VerifiedChain } from './chain.js'
import { covers } from './paths.js'
import { asUnauthorized, unauthorized } from './reasons.js'
import type { TrustIndex } from './trust.js'
import { decodeToken, type Token } from './ucan.js'

/**
 * The contract between the actor layer and the capability layer. `security/` knows nothing of
 * actors: the dispatcher calls `authorize` with an envelope's facts.
 */
export interface AuthorizeRequest {
  /** The DID that signed the envelope (its `from.id`): a valid chain must end at it. */
  invoker: string
  /** The actor being invoked (`to.id`): tokens restricted to another audience are refused. */
  audience: string
  /** Capability path the behaviour requires. */
  capability: string
  /** For broadcasts: the topic the envelope was published on. */
  topic?: string
  /** The envelope's `cap`: UCAN JWTs, the invoker's own tokens first, then their proofs. */
  proofs: readonly string[]
  /** Unix ms; injected so tests control time. */
  now: number
}

export interface Authorizer {
  /** Resolves when authorized; throws `Unauthorized` (with a `reason` field) otherwise. */
  authorize: (req: AuthorizeRequest) => Promise<void>
  /**
   * Answers at once when no verification is needed: true when the invoker is a root or a cached
   * chain authorizes the request. False only means "ask `authorize`", which verifies what it must
   * and gives the reason of a refusal. Lets a dispatcher serve a steady caller without a turn of
   * the event loop.
   */
  allowsNow?: (req: AuthorizeRequest) => boolean
}

export interface ProofSource {
  /** Tokens (from provide anchors) proving `capability` [on `topic`] for a call to `audience`. */
  proofsFor: (capability: string, audience: string, topic?: string) => Promise<string[]>
}

// ---- implementation -------------------------------------------------------------------------

/** What the authorizer reads: the context's anchors and the revocations heard of. */
export interface AuthorizerComponents {
  /** Current index of the context's anchors (read on every call; replaced on change). */
  trust: () => TrustIndex
  /** Whether issuer `iss` revoked token `id` (signed revocation records). */
  isRevoked: (id: string, iss: string) => boolean
  /**
   * The node this authorizer guards. A token restricted to a node (`--audience`) is usable on
   * that node's actors: the restriction must name the invoked actor or this node.
   */
  selfDid?: string
  /** Chains kept verified (default CHAIN_CACHE_MAX). */
  cacheMax?: number
}

export interface CachingAuthorizer extends Authorizer {
  allowsNow: (req: AuthorizeRequest) => boolean
  /** Drops every cached chain; call whenever the anchors change. */
  invalidate: () => void
  /** A revocation of token `id` arrived: drops only the cached chains it touches. */
  revoked: (id: string) => void
  /** Whether `iss` issued a link of a chain this authorizer holds or its anchors hold. */
  knowsIssuer: (iss: string) => boolean
  /** The expiry (unix ms) of token `id` when a chain this authorizer holds or its anchors hold contains it. */
  expiryOf: (id: string) => number | undefined
  readonly stats: { hits: number, misses: number, size: number }
}

/** A cached chain and what it means under the anchors and revocations it was checked against. */
interface Entry {
  chain: VerifiedChain
  /** Id of a revoked link, if any. */
  revoked: string | undefined
  /** Some link was issued by a root (or the node itself). */
  rooted: boolean
  /** Otherwise: require anchors admitting one of the chain's issuers (not revoked). */
  requires: readonly VerifiedChain[]
}

/** Every chain an entry depends on: its own and the require anchors that admit it. */
function chainsOf (e: Entry): VerifiedChain[] { return [e.chain, ...e.requires] }

function revokedLink (chain: VerifiedChain, idx: TrustIndex, isRevoked: AuthorizerComponents['isRevoked']): string | undefined {
  for (let i = 0; i < chain.links.length; i++) {
    const id = chain.ids[i]
    if (idx.revokedIds.has(id) || isRevoked(id, chain.links[i].payload.iss)) return id
  }
  return undefined
}

function usable (chain: VerifiedChain, now: number): boolean {
  return chain.expiresAt * 1000 > now && (chain.notBefore === undefined || chain.notBefore * 1000 <= now)
}

function nodeAllows (chain: VerifiedChain, audience: string, selfDid: string | undefined): boolean {
  // Links nest their node restriction (checkLink), so the leaf carries the strictest one.
  const node = chain.links[0].grant.node
  return node === undefined || node === audience || node === selfDid
}

function grants (chain: VerifiedChain, capability: string, topic: string | undefined): boolean {
  const g = chain.links[0].grant
  return covers(g.caps, capability) && (topic === undefined || covers(g.topics, topic))
}

/**
 * The authorizer of one context. Order of checks (specs/capabilities.md, "Authorizing one
 * invocation"): invoker is a root → allowed; else for each attached token issued to the invoker
 * (at most MAX_CANDIDATES verified cold): chain verified (cached) → time → revocation → target
 * node → anchoring (root, or a require anchor that grants the request) → capability and topic.
 * The first candidate that passes authorizes; otherwise the most telling refusal is thrown.
 *
 * Verified chains are cached by their JWT text with what they mean under the current anchors
 * and revocations; the cache is emptied when the anchors change, a revocation drops only the
 * entries whose chains contain the revoked token, and an entry is dropped once its chain expires.
 * A steady stream of invocations with the same proofs costs one Map lookup and a few comparisons
 * each. Only chains that can authorize something here (anchored on a root or a require anchor)
 * are cached, least recently used first out: a flood of valid but unanchored chains (anyone can
 * sign some) costs their sender a verification each and never evicts an entry honest callers use.
 */
export function createAuthorizer (components: AuthorizerComponents): CachingAuthorizer {
  const { trust, isRevoked, selfDid } = components
  const cacheMax = components.cacheMax ?? CHAIN_CACHE_MAX
  const cache = new Map<string, Entry>()
  const stats = { hits: 0, misses: 0, get size () { return cache.size } }
  /** Issuers of the cached chains' links, with how many entries name each. */
  const issuers = new Map<string, number>()

  function countIssuers (e: Entry, by: 1 | -1): void {
    for (const c of chainsOf(e)) {
      for (const l of c.links) {
        const n = (issuers.get(l.payload.iss) ?? 0) + by
        if (n <= 0) issuers.delete(l.payload.iss); else issuers.set(l.payload.iss, n)
      }
    }
  }
  function remember (jwt: string, e: Entry): void {
    if (cache.size >= cacheMax) forget(cache.keys().next().value as string)
    cache.set(jwt, e)
    countIssuers(e, 1)
  }
  function forget (jwt: string): void {
    const e = cache.get(jwt)
    if (e === undefined) return
    cache.delete(jwt)
    countIssuers(e, -1)
  }
  /** A hit moves the entry to the young end (Map order doubles as LRU order). */
  function touch (jwt: string, e: Entry): void {
    cache.delete(jwt)
    cache.set(jwt, e)
  }

  async function fill (leaf: Token): Promise<Entry> {
    const chain = await verifyChain(leaf)
    const idx = trust()
    const rooted = chain.links.some(l => idx.roots.has(l.payload.iss))
    const requires: VerifiedChain[] = []
    if (!rooted) {
      for (const l of chain.links) {
        for (const r of idx.require.get(l.payload.iss) ?? []) {
          if (revokedLink(r, idx, isRevoked) === undefined) requires.push(r)
        }
      }
    }
    const entry: Entry = { chain, revoked: revokedLink(chain, idx, isRevoked), rooted, requires }
    if (rooted || requires.length > 0) remember(leaf.jwt, entry)
    return entry
  }

  function check (jwt: string, e: Entry, req: AuthorizeRequest): void {
    const { chain } = e
    const now = req.now
    if (chain.expiresAt * 1000 <= now) {
      forget(jwt)
      throw unauthorized('expired', `the capability chain expired at ${new Date(chain.expiresAt * 1000).toISOString()}`, { exp: chain.expiresAt })
    }
    if (chain.notBefore !== undefined && chain.notBefore * 1000 > now) {
      throw unauthorized('not-yet-valid', `the capability chain is not valid before ${new Date(chain.notBefore * 1000).toISOString()}`, { nbf: chain.notBefore })
    }
    if (e.revoked !== undefined) throw unauthorized('revoked', `token ${e.revoked} in the chain was revoked`, { id: e.revoked })
    if (!nodeAllows(chain, req.audience, selfDid)) {
      throw unauthorized('wrong-audience', `the chain may only be used on node ${chain.links[0].grant.node ?? ''}`)
    }
    if (!e.rooted) {
      if (e.requires.length === 0) {
        throw unauthorized('not-anchored', `the chain (root issuer ${chain.links[chain.links.length - 1].payload.iss}) is anchored on no root or require anchor of this node`)
      }
      const admitted = e.requires.some(r => usable(r, now) && nodeAllows(r, req.audience, selfDid) && grants(r, req.capability, req.topic))
      if (!admitted) {
        throw unauthorized('not-covered', `no valid require anchor of this node admits ${req.capability}${req.topic !== undefined ? ` on topic ${req.topic}` : ''} for this chain's organisation`)
      }
    }
    const g = chain.links[0].grant
    if (!covers(g.caps, req.capability)) throw unauthorized('not-covered', `the chain does not grant ${req.capability}`, { capability: req.capability })
    if (req.topic !== undefined && !covers(g.topics, req.topic)) throw unauthorized('not-covered', `the chain does not grant topic ${req.topic}`, { topic: req.topic })
  }

  async function authorize (req: AuthorizeRequest): Promise<void> {
    if (trust().roots.has(req.invoker)) return
    if (req.proofs.length === 0) throw unauthorized('no-proof', `${req.invoker} is no root of this node and attached no capability token for ${req.capability}`)
    // A refusal of a token issued to the invoker says more than one of an undecodable token.
    let refusal: unknown
    let undecodable: unknown
    let cold = 0
    for (const jwt of req.proofs) {
      let entry = cache.get(jwt)
      if (entry !== undefined) {
        stats.hits++
        if (entry.chain.links[0].payload.aud !== req.invoker) continue
        touch(jwt, entry)
      } else {
        let leaf: Token
        try { leaf = decodeToken(jwt) } catch (err) { undecodable ??= err; continue }
        // Proofs of the leaf may ride along in the list: only tokens issued to the invoker are candidates.
        if (leaf.payload.aud !== req.invoker) continue
        if (++cold > MAX_CANDIDATES) break
        stats.misses++
        try { entry = await fill(leaf) } catch (err) { refusal ??= err; continue }
      }
      try {
        check(jwt, entry, req)
        return
      } catch (err) { refusal ??= err }
    }
    if (refusal !== undefined || undecodable !== undefined) throw asUnauthorized(refusal ?? undecodable)
    throw unauthorized('wrong-subject', `none of the attached tokens was issued to the invoker ${req.invoker}`)
  }

  function allowsNow (req: AuthorizeRequest): boolean {
    if (trust().roots.has(req.invoker)) return true
    for (const jwt of req.proofs) {
      const entry = cache.get(jwt)
      if (entry === undefined || entry.chain.links[0].payload.aud !== req.invoker) continue
      try {
        check(jwt, entry, req)
      } catch { continue }
      stats.hits++
      touch(jwt, entry)
      return true
    }
    return false
  }

  /** Chains of the anchors (require and provide), which also name issuers and tokens. */
  function anchorChains (): VerifiedChain[] {
    const idx = trust()
    const out = [...idx.provide]
    for (const list of idx.require.values()) out.push(...list)
    return out
  }

  return {
    authorize,
    allowsNow,
    invalidate: () => { cache.clear(); issuers.clear() },
    revoked: (id) => {
      for (const [jwt, e] of [...cache]) if (chainsOf(e).some(c => c.ids.includes(id))) forget(jwt)
    },
    knowsIssuer: (iss) => {
      if (issuers.has(iss) || trust().roots.has(iss)) return true
      return anchorChains().some(c => c.links.some(l => l.payload.iss === iss))
    },
    expiryOf: (id) => {
      for (const c of [...[...cache.values()].flatMap(chainsOf), ...anchorChains()]) {
        const i = c.ids.indexOf(id)
        if (i >= 0) return c.links[i].payload.exp * 1000
      }
      return undefined
    },
    stats
  }
}
