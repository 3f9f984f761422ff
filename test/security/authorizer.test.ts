import { beforeAll, describe, expect, it } from 'vitest'
import type { Identity } from '../../src/identity/identity.js'
import type { AuthorizeRequest } from '../../src/security/authorizer.js'
import { selectProofs } from '../../src/security/proofs.js'
import { createRevocation } from '../../src/security/revocations.js'
import { tokenId } from '../../src/security/ucan.js'
import { HOUR, NOW, NOW_S, identities, refusal, testAuthz, tok } from './helpers.js'

describe('authorizer', () => {
  let node: Identity, owner: Identity, alice: Identity, bob: Identity, carol: Identity
  let orgB: Identity, orgBUser: Identity, stranger: Identity
  beforeAll(async () => {
    [node, owner, alice, bob, carol, orgB, orgBUser, stranger] = await identities(8)
  })

  it('lets roots and the node itself in without tokens; others need one', async () => {
    const z = await testAuthz(node, { roots: [owner.did] })
    await z.ask({ invoker: owner.did })
    await z.ask({ invoker: node.did })
    expect(await refusal(z.ask({ invoker: alice.did }))).toMatchObject({ name: 'Unauthorized', reason: 'no-proof' })
  })

  it('accepts a chain from a root down to the invoker, within what every link grants', async () => {
    const z = await testAuthz(node, { roots: [owner.did] })
    const oa = await tok(owner, alice, { caps: ['/dms/node'], depth: 2 })
    const ab = await tok(alice, bob, { caps: ['/dms/node/peers'], depth: 1, proof: oa })
    const bc = await tok(bob, carol, { caps: ['/dms/node/peers/list'], depth: 0, proof: ab })
    await z.ask({ invoker: carol.did, proofs: [bc] })
    expect(await refusal(z.ask({ invoker: carol.did, proofs: [bc], capability: '/dms/node/peers/ping' }))).toMatchObject({ reason: 'not-covered' })
    await z.ask({ invoker: bob.did, proofs: [ab], capability: '/dms/node/peers/ping' })
    // Depth 0 at Carol: she may use it but not delegate it.
    const cd = await tok(carol, stranger, { caps: ['/dms/node/peers/list'], depth: 0, proof: bc })
    expect(await refusal(z.ask({ invoker: stranger.did, proofs: [cd] }))).toMatchObject({ reason: 'depth-exceeded' })
  })

  it('accepts a chain that passes through a root even if rooted elsewhere', async () => {
    const z = await testAuthz(node, { roots: [owner.did] })
    const so = await tok(stranger, owner, { caps: ['/dms'] })
    const oa = await tok(owner, alice, { caps: ['/dms/node'], proof: so })
    await z.ask({ invoker: alice.did, proofs: [oa] })
  })

  it('finds the invoker\'s token among proofs that ride along, in any order', async () => {
    const z = await testAuthz(node, { roots: [owner.did] })
    const oa = await tok(owner, alice, { caps: ['/dms'] })
    const ab = await tok(alice, bob, { caps: ['/dms/node'], proof: oa })
    await z.ask({ invoker: bob.did, proofs: [oa, 'garbage', ab] })
    // A token for the wrong capability next to a good one: the good one wins.
    const narrow = await tok(owner, bob, { caps: ['/dms/cap'] })
    await z.ask({ invoker: bob.did, proofs: [narrow, ab] })
  })

  it('needs the topic granted for broadcasts', async () => {
    const z = await testAuthz(node, { roots: [owner.did] })
    const t = await tok(owner, alice, { caps: ['/broadcast'], topics: ['/nunet'] })
    await z.ask({ invoker: alice.did, proofs: [t], capability: '/broadcast/hello', topic: '/nunet/hello' })
    expect(await refusal(z.ask({ invoker: alice.did, proofs: [t], capability: '/broadcast/hello', topic: '/other' }))).toMatchObject({ reason: 'not-covered' })
    const noTopic = await tok(owner, alice, { caps: ['/broadcast'] })
    expect(await refusal(z.ask({ invoker: alice.did, proofs: [noTopic], capability: '/broadcast/hello', topic: '/nunet/hello' }))).toMatchObject({ reason: 'not-covered' })
  })

  it('respects nbf', async () => {
    const z = await testAuthz(node, { roots: [owner.did] })
    const later = await tok(owner, alice, { nbf: NOW_S + 60, exp: NOW_S + HOUR })
    expect(await refusal(z.ask({ invoker: alice.did, proofs: [later] }))).toMatchObject({ reason: 'not-yet-valid' })
    await z.ask({ invoker: alice.did, proofs: [later], now: NOW + 61_000 })
  })

  it('admits a foreign organisation through a require anchor, within what it grants', async () => {
    const req = await tok(owner, orgB, { caps: ['/dms/node/peers'], exp: NOW_S + HOUR })
    const z = await testAuthz(node, { roots: [owner.did], require: [req] })
    const b1 = await tok(orgB, orgBUser, { caps: ['/'] }) // org B grants its user everything...
    await z.ask({ invoker: orgBUser.did, proofs: [b1], capability: '/dms/node/peers/list' })
    // ...but this node admits org B only for /dms/node/peers.
    expect(await refusal(z.ask({ invoker: orgBUser.did, proofs: [b1], capability: '/dms/cap/anchor' }))).toMatchObject({ reason: 'not-covered' })
    // Past the require anchor's expiry the organisation is no longer admitted.
    expect(await refusal(z.ask({ invoker: orgBUser.did, proofs: [await tok(orgB, orgBUser, { exp: NOW_S + 2 * HOUR })], now: NOW + HOUR * 1000 + 1 }))).toMatchObject({ reason: 'not-covered' })
    // A require anchor signed by no root is ignored.
    const bogus = await tok(stranger, orgB, { caps: ['/'] })
    const z2 = await testAuthz(node, { roots: [owner.did], require: [bogus] })
    expect(await refusal(z2.ask({ invoker: orgBUser.did, proofs: [b1] }))).toMatchObject({ reason: 'not-anchored' })
  })

  it('caches verified chains: a stream of invocations verifies the proofs once', async () => {
    const z = await testAuthz(node, { roots: [owner.did] })
    const oa = await tok(owner, alice, { caps: ['/dms'] })
    const ab = await tok(alice, bob, { caps: ['/dms/node'], proof: oa })
    for (let i = 0; i < 100; i++) await z.ask({ invoker: bob.did, proofs: [ab] })
    expect(z.authorizer.stats).toMatchObject({ misses: 1, hits: 99, size: 1 })
    // An entry serves only the invoker it was issued to, and only until the chain expires.
    expect(await refusal(z.ask({ invoker: alice.did, proofs: [ab] }))).toMatchObject({ reason: 'wrong-subject' })
    expect(await refusal(z.ask({ invoker: bob.did, proofs: [ab], now: NOW + HOUR * 1000 }))).toMatchObject({ reason: 'expired' })
    expect(z.authorizer.stats.size).toBe(0)
  })

  it('answers at once (allowsNow) only what needs no verification, and the same as authorize', async () => {
    const z = await testAuthz(node, { roots: [owner.did] })
    const oa = await tok(owner, alice, { caps: ['/dms'] })
    const ab = await tok(alice, bob, { caps: ['/dms/node/peers'], proof: oa })
    const req = { audience: node.did, capability: '/dms/node/peers/list', now: NOW }
    const now = (r: Partial<AuthorizeRequest>): boolean => z.authorizer.allowsNow({ ...req, invoker: bob.did, proofs: [ab], ...r })
    expect(now({ invoker: owner.did, proofs: [] })).toBe(true)
    // a chain never verified here: authorize must verify it first
    expect(now({})).toBe(false)
    await z.ask({ invoker: bob.did, proofs: [ab] })
    expect(now({})).toBe(true)
    // the cached chain serves only what authorize would allow
    expect(now({ capability: '/dms/node/onboarding/onboard' })).toBe(false)
    expect(now({ invoker: alice.did })).toBe(false)
    expect(now({ now: NOW + HOUR * 1000 })).toBe(false)
    await z.setAnchors({ roots: [] })
    expect(now({})).toBe(false)
    expect(await refusal(z.ask({ invoker: bob.did, proofs: [ab] }))).toMatchObject({ reason: 'not-anchored' })
  })

  it('drops cached chains when anchors or revocations change', async () => {
    const z = await testAuthz(node, { roots: [owner.did] })
    const oa = await tok(owner, alice, { caps: ['/dms'] })
    await z.ask({ invoker: alice.did, proofs: [oa] })
    await z.setAnchors({ roots: [] })
    expect(await refusal(z.ask({ invoker: alice.did, proofs: [oa] }))).toMatchObject({ reason: 'not-anchored' })
    await z.setAnchors({ roots: [owner.did] })
    await z.ask({ invoker: alice.did, proofs: [oa] })
    await z.revocations.add(createRevocation(owner, oa))
    expect(await refusal(z.ask({ invoker: alice.did, proofs: [oa] }))).toMatchObject({ reason: 'revoked' })
  })

  it('honours the revoke anchors of the context, whoever issued the token', async () => {
    const oa = await tok(owner, alice, { caps: ['/dms'] })
    const z = await testAuthz(node, { roots: [owner.did], revoke: [oa] })
    expect(await refusal(z.ask({ invoker: alice.did, proofs: [oa] }))).toMatchObject({ reason: 'revoked' })
  })

  it('ignores revocation records signed by someone other than the issuer', async () => {
    const z = await testAuthz(node, { roots: [owner.did] })
    const oa = await tok(owner, alice, { caps: ['/dms'] })
    expect(() => createRevocation(stranger, oa)).toThrow(expect.objectContaining({ name: 'Unauthorized', fields: expect.objectContaining({ reason: 'not-issuer' }) }))
    // A record naming the token's id, validly signed, but by a stranger: it revokes nothing of the
    // owner's, even when kept (here as if a local authorized caller handed it in; from the network a
    // stranger's record is not kept at all: test/security/bounds.test.ts).
    const selfSigned = { iss: stranger.did, revoke: tokenId(oa), challenge: Buffer.from(stranger.sign(new TextEncoder().encode(`REVOKE:${tokenId(oa)}`))).toString('base64url') }
    expect(await z.revocations.add(selfSigned, { trusted: true })).toBe(true)
    await z.ask({ invoker: alice.did, proofs: [oa] })
  })

  it('offers provide anchors as proofs only where they fit', async () => {
    const z = await testAuthz(node, {
      provide: [
        await tok(owner, alice, { caps: ['/dms/node'], exp: NOW_S + HOUR }),
        await tok(owner, alice, { caps: ['/dms'], exp: NOW_S + 2 * HOUR }),
        await tok(owner, alice, { caps: ['/dms/node'], node: bob.did }),
        await tok(owner, alice, { caps: ['/broadcast'], topics: ['/nunet'] }),
        await tok(owner, alice, { caps: ['/'], exp: NOW_S - 1 })
      ]
    })
    const idx = z.index()
    const ids = (l: string[]): number[] => l.map(j => idx.provide.findIndex(c => c.links[0].jwt === j))
    expect(ids(selectProofs(idx, '/dms/node/peers/list', carol.did, undefined, NOW))).toEqual([1, 0])
    expect(ids(selectProofs(idx, '/dms/node/peers/list', bob.did, undefined, NOW))).toEqual([1, 0, 2])
    expect(ids(selectProofs(idx, '/broadcast/hello', alice.did, '/nunet/hello', NOW))).toEqual([3])
    expect(selectProofs(idx, '/other', carol.did, undefined, NOW)).toEqual([])
  })
})
