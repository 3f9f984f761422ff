import { beforeAll, describe, expect, it } from 'vitest'
import type { Identity } from '../../src/identity/identity.js'
import { createRevocation } from '../../src/security/revocations.js'
import { tokenId } from '../../src/security/ucan.js'
import { HOUR, NOW, NOW_S, identities, refusal, testAuthz, tok } from './helpers.js'

/**
 * What a flood can make the capability layer hold or forget (issue 12, items 2 and 3): the chain
 * cache keeps what honest callers use, and revocation records are kept only for known issuers,
 * until their token's expiry, within bounds.
 */
describe('capability caches and revocations under a flood', () => {
  let node: Identity, owner: Identity, alice: Identity, bob: Identity, stranger: Identity
  beforeAll(async () => { [node, owner, alice, bob, stranger] = await identities(5) })

  it('never lets valid but unanchored chains evict the chain an honest caller uses', async () => {
    const z = await testAuthz(node, { roots: [owner.did] }, { cacheMax: 4 })
    const good = await tok(owner, alice, { caps: ['/dms/node'] })
    await z.ask({ invoker: alice.did, proofs: [good] })
    const [mallory] = await identities(1)
    for (let i = 0; i < 12; i++) {
      // anyone can sign a chain to themselves; it verifies, and is refused as not anchored here
      const [self] = await identities(1)
      const bogus = await tok(self, mallory, { caps: ['/dms/node'] })
      expect(await refusal(z.ask({ invoker: mallory.did, proofs: [bogus] }))).toMatchObject({ reason: 'not-anchored' })
    }
    expect(z.authorizer.stats.size).toBe(1)
    expect(z.authorizer.allowsNow({ invoker: alice.did, audience: node.did, capability: '/dms/node/peers/list', proofs: [good], now: NOW })).toBe(true)
  })

  it('drops the least recently used chain first', async () => {
    const z = await testAuthz(node, { roots: [owner.did] }, { cacheMax: 2 })
    const a = await tok(owner, alice, { caps: ['/dms/node'] })
    const b = await tok(owner, bob, { caps: ['/dms/node'] })
    const c = await tok(owner, stranger, { caps: ['/dms/node'] })
    await z.ask({ invoker: alice.did, proofs: [a] })
    await z.ask({ invoker: bob.did, proofs: [b] })
    await z.ask({ invoker: alice.did, proofs: [a] }) // alice's is the younger now
    await z.ask({ invoker: stranger.did, proofs: [c] })
    const cached = (invoker: Identity, jwt: string): boolean => z.authorizer.allowsNow({ invoker: invoker.did, audience: node.did, capability: '/dms/node/peers/list', proofs: [jwt], now: NOW })
    expect(cached(alice, a)).toBe(true)
    expect(cached(bob, b)).toBe(false)
  })

  it('a revocation drops only the chains that contain the revoked token', async () => {
    const z = await testAuthz(node, { roots: [owner.did] })
    const oa = await tok(owner, alice, { caps: ['/dms/node'] })
    const ob = await tok(owner, bob, { caps: ['/dms/node'] })
    await z.ask({ invoker: alice.did, proofs: [oa] })
    await z.ask({ invoker: bob.did, proofs: [ob] })
    const misses = z.authorizer.stats.misses
    expect(await z.revocations.add(createRevocation(owner, oa))).toBe(true)
    expect(await refusal(z.ask({ invoker: alice.did, proofs: [oa] }))).toMatchObject({ reason: 'revoked' })
    // bob's chain stayed cached: no second verification
    await z.ask({ invoker: bob.did, proofs: [ob] })
    expect(z.authorizer.stats.misses).toBe(misses + 1)
  })

  it('keeps revocations only of issuers of chains it knows; an authorized local revoke is kept anyway', async () => {
    const z = await testAuthz(node, { roots: [owner.did] })
    const sb = await tok(stranger, bob, { caps: ['/dms/node'] })
    await expect(z.revocations.add(createRevocation(stranger, sb))).rejects.toMatchObject({ name: 'Unauthorized', fields: { reason: 'unknown-issuer' } })
    expect(z.revocations.check(createRevocation(stranger, sb))).toBe('ignore')
    expect(z.revocations.size).toBe(0)
    // once a chain through the stranger has been seen here, its revocations count
    const ob = await tok(owner, stranger, { caps: ['/dms/node'] })
    const chained = await tok(stranger, bob, { caps: ['/dms/node'], proof: ob })
    await z.ask({ invoker: bob.did, proofs: [chained] })
    expect(z.revocations.check(createRevocation(stranger, chained))).toBe('accept')
    expect(await z.revocations.add(createRevocation(stranger, chained))).toBe(true)
    // a record by someone trusted locally (the `cap revoke` behaviour) is kept whoever signed it
    const [other] = await identities(1)
    expect(await z.revocations.add(createRevocation(other, await tok(other, bob)), { trusted: true })).toBe(true)
    // a forged record is rejected (the publisher's score drops)
    const forged = { ...createRevocation(owner, ob), challenge: 'AAAA' }
    expect(z.revocations.check(forged)).toBe('reject')
  })

  it('keeps a record until its token expires, and refuses past its bounds with Overloaded', async () => {
    let now = NOW
    const z = await testAuthz(node, { roots: [owner.did] }, { revocations: { now: () => now, max: 3, perIssuerMax: 2 } })
    const short = await tok(owner, alice, { exp: NOW_S + 60 })
    const long1 = await tok(owner, bob, { exp: NOW_S + HOUR })
    const long2 = await tok(owner, stranger, { exp: NOW_S + HOUR })
    expect(await z.revocations.add(createRevocation(owner, short))).toBe(true)
    expect(await z.revocations.add(createRevocation(owner, long1))).toBe(true)
    await expect(z.revocations.add(createRevocation(owner, long2))).rejects.toMatchObject({ name: 'Overloaded' })
    expect(z.revocations.has(tokenId(long1), owner.did)).toBe(true)
    // the short token expires: its record makes room
    now = NOW + 61_000
    expect(await z.revocations.add(createRevocation(owner, long2))).toBe(true)
    expect(z.revocations.has(tokenId(short), owner.did)).toBe(false)
    expect(z.revocations.has(tokenId(long1), owner.did)).toBe(true)
    // a token that expired already needs no record
    expect(await z.revocations.add(createRevocation(owner, short))).toBe(false)
  })
})
