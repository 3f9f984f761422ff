import type { ProofSource } from './authorizer.js'
import { readAnchors } from './anchors.js'
import type { VerifiedChain } from './chain.js'
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
    .map(c => c.links[0].jwt)
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
