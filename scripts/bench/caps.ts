import '../../src/lib/polyfill.js'
import { pathToFileURL } from 'node:url'
import { verifyWithDid } from '../../src/identity/did.js'
import { newIdentity, type Identity } from '../../src/identity/identity.js'
import { createAuthorizer, type AuthorizeRequest } from '../../src/security/authorizer.js'
import { emptyAnchors } from '../../src/security/anchors.js'
import { buildIndex } from '../../src/security/trust.js'
import { issueToken } from '../../src/security/ucan.js'

/**
 * Capability verification throughput, through the authorizer the dispatcher calls:
 * - cold: a chain of depth 1, 2 and 4 verified from scratch each time (cache dropped before
 *   every call): decode, every signature, every attenuation, anchoring, coverage;
 * - cached: the same chain over and over (the steady state of a caller), with the token text
 *   as a new string each call, as it is when decoded from a fresh envelope;
 * - baseline, in the same run: one node:crypto Ed25519 verify, the floor of the cold path
 *   (a depth-n chain costs n of them), so figures compare across machines as ratios.
 * Every loop is bounded by time and by count.
 */
export interface CapsBenchResult {
  durationMsPerCase: number
  ed25519VerifyPerS: number
  coldChainsPerS: { depth1: number, depth2: number, depth4: number }
  cachedAuthorizationsPerS: number
  /** cold depth-2 chains/s divided by (verifies/s ÷ 2): 1.0 would be signatures alone. */
  coldDepth2VsSignatureFloor: number
}

const MAX_ITERATIONS = 5_000_000

async function rate (durationMs: number, fn: () => Promise<void> | void): Promise<number> {
  for (let i = 0; i < 50; i++) await fn() // warm-up
  const start = performance.now()
  let n = 0
  while (n < MAX_ITERATIONS) {
    // Check the clock every 64 calls: performance.now() would otherwise weigh on the cached case.
    for (let i = 0; i < 64; i++) await fn()
    n += 64
    if (performance.now() - start >= durationMs) break
  }
  return Math.round(n / ((performance.now() - start) / 1000))
}

async function chainOf (depth: number, root: Identity): Promise<{ leaf: string, invoker: Identity }> {
  const exp = Math.floor(Date.now() / 1000) + 3600
  let issuer = root
  let proof: string | undefined
  for (let i = 0; i < depth; i++) {
    const subject = await newIdentity()
    proof = await issueToken(issuer, { audience: subject.did, caps: i === 0 ? ['/dms'] : ['/dms/node'], exp, proof })
    issuer = subject
  }
  return { leaf: proof as string, invoker: issuer }
}

export async function benchCaps (opts: { durationMs?: number } = {}): Promise<CapsBenchResult> {
  const durationMs = opts.durationMs ?? 1_000
  const [node, root] = await Promise.all([newIdentity(), newIdentity()])
  const idx = await buildIndex({ ...emptyAnchors(), roots: [root.did] }, { selfDid: node.did })
  const authz = createAuthorizer({ trust: () => idx, isRevoked: () => false, selfDid: node.did })
  const request = (leaf: string, invoker: Identity): AuthorizeRequest => ({ invoker: invoker.did, audience: node.did, capability: '/dms/node/peers/list', proofs: [leaf], now: Date.now() })

  const data = new TextEncoder().encode('x'.repeat(200))
  const sig = node.sign(data)
  const ed25519VerifyPerS = await rate(durationMs, () => { if (!verifyWithDid(node.did, data, sig)) throw new Error('baseline verify failed') })

  const cold: Record<string, number> = {}
  for (const depth of [1, 2, 4]) {
    const { leaf, invoker } = await chainOf(depth, root)
    const req = request(leaf, invoker)
    cold[`depth${depth}`] = await rate(durationMs, async () => {
      authz.invalidate()
      await authz.authorize(req)
    })
  }

  const { leaf, invoker } = await chainOf(2, root)
  const bytes = Buffer.from(leaf)
  const base = request(leaf, invoker)
  const cachedAuthorizationsPerS = await rate(durationMs, async () => {
    await authz.authorize({ ...base, proofs: [bytes.toString('utf8')] })
  })

  return {
    durationMsPerCase: durationMs,
    ed25519VerifyPerS,
    coldChainsPerS: { depth1: cold.depth1, depth2: cold.depth2, depth4: cold.depth4 },
    cachedAuthorizationsPerS,
    coldDepth2VsSignatureFloor: Math.round(cold.depth2 / (ed25519VerifyPerS / 2) * 100) / 100
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const durationMs = Number(process.env.BENCH_MS ?? 1_000)
  process.stdout.write(JSON.stringify(await benchCaps({ durationMs }), null, 2) + '\n')
}
