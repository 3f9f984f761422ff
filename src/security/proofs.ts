import type { ProofSource } from './authorizer.js'
import { readAnchors } from './anchors.js'
import type { VerifiedChain } from './chain.js'
import type { Identity } from '../identity/identity.js'
import { delegateTokens, grantToken } from './issue.js'
import { covers } from './paths.js'
import { buildIndex, type TrustIndex } from './trust.js'

/** At most this many tokens are attached per call: one usually suffices, a spare covers a revoked one. */
const MAX_ATTACHED = 3

/**
 * Provide anchors that prove `capability` [on `topic`] for a call to `audience`, freshest first.
 * A token restricted to a node is offered only to that node; broadcasts go to every node, so
 * only unrestricted tokens are offered for them.
 */
export function selectProofs (idx: TrustIndex, capability: string, audience: string, topic: string | undefined, now: number): string[] {
  return selectChains(idx, capability, audience, topic, now).map(c => c.links[0].jwt)
}

function selectChains (idx: TrustIndex, capability: string, audience: string, topic: string | undefined, now: number): VerifiedChain[] {
  const fits = (c: VerifiedChain): boolean => {
    const g = c.links[0].grant
    if (c.expiresAt * 1000 <= now || (c.notBefore !== undefined && c.notBefore * 1000 > now)) return false
    if (c.ids.some(id => idx.revokedIds.has(id))) return false
    if (g.node !== undefined && (topic !== undefined || g.node !== audience)) return false
    return covers(g.caps, capability) && (topic === undefined || covers(g.topics, topic))
  }
  return idx.provide.filter(fits)
    .sort((a, b) => b.expiresAt - a.expiresAt)
    .slice(0, MAX_ATTACHED)
}

/** A proof source over a live index (the daemon's context). */
export function createProofSource (index: () => TrustIndex, now: () => number = Date.now): ProofSource {
  return {
    proofsFor: async (capability, audience, topic) => selectProofs(index(), capability, audience, topic, now())
  }
}

/**
 * A proof source over a context's anchors file as it is now (the CLI invoking as `--context
 * user`: one process, one call). Reads and verifies the file once.
 */
export async function loadProofSource (dataDir: string, context: string): Promise<ProofSource> {
  const idx = await buildIndex(await readAnchors(dataDir, context))
  return createProofSource(() => idx)
}

/**
 * Proofs for a child actor of the node (an orchestrator) that calls other nodes on the node's
 * behalf: for each call, tokens from the node to the child for exactly that capability, one
 * chained on each fitting provide anchor (at most MAX_ATTACHED, freshest first: for receivers that
 * trust whoever granted it), plus one signed by the node alone (for receivers that trust the node
 * itself, the node among them).
 * Tokens live `lifetimeMs` at most and are reused for half of that.
 */
export function createDelegatedProofSource (issuer: Identity, index: () => TrustIndex, subject: string, lifetimeMs: number, now: () => number = Date.now): ProofSource {
  const cache = new Map<string, { tokens: string[], until: number }>()
  return {
    proofsFor: async (capability, audience, topic) => {
      const key = `${capability}\u0000${audience}\u0000${topic ?? ''}`
      const t = now()
      const hit = cache.get(key)
      if (hit !== undefined && hit.until > t) return hit.tokens
      const idx = index()
      const held = selectChains(idx, capability, audience, topic, t).filter(c => c.links[0].payload.aud === issuer.did && c.links[0].grant.depth !== 0)
      const req = { subject, caps: [capability], topics: topic !== undefined ? [topic] : undefined }
      // One delegation per held grant (freshest first, bounded): a broadcast reaches providers of
      // different owners, and each admits only the chain through its own owner's grant.
      const tokens: string[] = []
      for (const chain of held) {
        const exp = Math.floor(Math.min(t + lifetimeMs, chain.expiresAt * 1000) / 1000)
        tokens.push(...await delegateTokens(issuer, [chain], { ...req, exp }, 'no', t).catch(() => []))
      }
      tokens.push(await grantToken(issuer, { ...req, exp: Math.floor((t + lifetimeMs) / 1000) }))
      if (cache.size > 256) cache.clear()
      cache.set(key, { tokens, until: t + lifetimeMs / 2 })
      return tokens
    }
  }
}
