import { beforeAll, describe, expect, it } from 'vitest'
import type { Identity } from '../../src/identity/identity.js'
import { createRevocation } from '../../src/security/revocations.js'
import { HEADER, HOUR, NOW_S, decodePart, forge, identities, refusal, secp256k1Did, tamper, testAuthz, tok, type TestAuthz } from './helpers.js'

/**
 * Every way a token can be wrong, at the authorizer (what the dispatcher calls). Each is refused
 * with `Unauthorized` and its reason, and a valid call is still accepted right after: a refusal
 * leaves no state behind that hurts the next caller.
 */
describe('adversarial tokens', () => {
  let node: Identity, root: Identity, alice: Identity, bob: Identity, carol: Identity, mallory: Identity, other: Identity
  let z: TestAuthz
  let valid: string

  beforeAll(async () => {
    [node, root, alice, bob, carol, mallory, other] = await identities(7)
    z = await testAuthz(node, { roots: [root.did] })
    valid = await tok(root, alice, { caps: ['/dms/node'] })
  })

  async function refused (invoker: Identity, proofs: string[], reason: string, extra: { capability?: string, topic?: string } = {}): Promise<void> {
    const r = await refusal(z.ask({ invoker: invoker.did, proofs, ...extra }))
    expect(r).toMatchObject({ name: 'Unauthorized', code: 'UNAUTHORIZED', reason })
    // ...and the honest caller is still served, from a warm cache or a cold one.
    await z.ask({ invoker: alice.did, proofs: [valid] })
    z.authorizer.invalidate()
    await z.ask({ invoker: alice.did, proofs: [valid] })
  }

  it('accepts the valid chain it compares against', async () => {
    await z.ask({ invoker: alice.did, proofs: [valid] })
  })

  it('tampered signature', async () => {
    const [h, p, s] = valid.split('.')
    const i = 20 // a character well inside the signature: every one of its bits is significant
    const flipped = `${s.slice(0, i)}${s[i] === 'A' ? 'B' : 'A'}${s.slice(i + 1)}`
    await refused(alice, [`${h}.${p}.${flipped}`], 'bad-signature')
  })

  it('changed audience (subject rewritten to the thief, signature kept)', async () => {
    await refused(mallory, [tamper(valid, p => { p.aud = mallory.did })], 'bad-signature')
  })

  it('a token issued to someone else, presented unchanged', async () => {
    await refused(mallory, [valid], 'wrong-subject')
  })

  it('widened capability', async () => {
    const parent = await tok(root, alice, { caps: ['/dms/node/peers'] })
    const child = await tok(alice, bob, { caps: ['/dms/node'], proof: parent })
    await refused(bob, [child], 'widened')
  })

  it('widened capability by a sibling prefix (/dms/no does not cover /dms/node)', async () => {
    const parent = await tok(root, alice, { caps: ['/dms/no'] })
    const child = await tok(alice, bob, { caps: ['/dms/node'], proof: parent })
    await refused(bob, [child], 'widened')
  })

  it('widened topic', async () => {
    const parent = await tok(root, alice, { caps: ['/broadcast'], topics: ['/nunet/hello'] })
    const child = await tok(alice, bob, { caps: ['/broadcast'], topics: ['/nunet'], proof: parent })
    await refused(bob, [child], 'widened', { capability: '/broadcast/hello', topic: '/nunet/hello' })
  })

  it('child outliving its parent', async () => {
    const parent = await tok(root, alice, { exp: NOW_S + HOUR })
    const child = await tok(alice, bob, { exp: NOW_S + 2 * HOUR, proof: parent })
    await refused(bob, [child], 'widened')
  })

  it('expired link', async () => {
    await refused(alice, [await tok(root, alice, { exp: NOW_S - 1 })], 'expired')
    const parent = await tok(root, alice, { exp: NOW_S })
    await refused(bob, [await tok(alice, bob, { exp: NOW_S, proof: parent })], 'expired')
  })

  it('tampered link in the middle of a chain (leaf re-signed by its issuer)', async () => {
    const ab = await tok(root, alice, { caps: ['/dms/node/peers'] })
    const bc = await tok(alice, bob, { caps: ['/dms/node/peers'], proof: ab })
    // Bob widens Alice's grant to him inside the proof, then signs a delegation to Carol with it.
    const widened = tamper(bc, p => { p.att = [{ with: 'dms:/', can: 'dms/invoke' }] })
    const cd = await tok(bob, carol, { caps: ['/'], proof: widened })
    await refused(carol, [cd], 'bad-signature', { capability: '/dms/cap/anchor' })
  })

  it('chain not anchored on a trusted root', async () => {
    const foreign = await tok(mallory, alice, { caps: ['/'] })
    await refused(alice, [foreign], 'not-anchored')
    const longer = await tok(alice, bob, { caps: ['/dms'], proof: foreign })
    await refused(bob, [longer], 'not-anchored')
  })

  it('token from a revoked issuer (the grant that made Bob an issuer was revoked)', async () => {
    const toBob = await tok(root, bob, { caps: ['/dms'] })
    const fromBob = await tok(bob, carol, { caps: ['/dms/node'], proof: toBob })
    await z.ask({ invoker: carol.did, proofs: [fromBob] }) // accepted, and now cached
    expect(await z.revocations.add(createRevocation(root, toBob))).toBe(true)
    await refused(carol, [fromBob], 'revoked')
    await refused(bob, [toBob], 'revoked')
  })

  it('oversized token blob', async () => {
    const huge = forge(root, HEADER, { iss: root.did, aud: alice.did, exp: NOW_S + HOUR, att: [], fct: [{ pad: 'x'.repeat(40_000) }], prf: [] })
    await refused(alice, [huge], 'too-large')
  })

  it('malformed JWT', async () => {
    for (const bad of ['', 'abc', 'a.b', 'a.b.c.d', '!!!.???.***', `${valid.split('.')[0]}.e30.${valid.split('.')[2]}`, 'eyJhbGciOiJFZERTQSJ9.eyJ9.AAAA']) {
      await refused(alice, [bad], 'malformed')
    }
  })

  it('unknown algorithm', async () => {
    const p = decodePart(valid, 1)
    await refused(alice, [forge(root, { ...HEADER, alg: 'ES256' }, p)], 'unknown-alg')
    await refused(alice, [forge(root, { ...HEADER, alg: 'none' }, p)], 'unknown-alg')
  })

  it('did:key with a wrong multicodec', async () => {
    const p = decodePart(valid, 1)
    await refused(alice, [forge(root, HEADER, { ...p, iss: secp256k1Did() })], 'bad-did')
    await refused(alice, [forge(root, HEADER, { ...p, aud: secp256k1Did() })], 'bad-did')
  })

  it('a token whose audience is another node', async () => {
    await refused(alice, [await tok(root, alice, { caps: ['/dms/node'], node: other.did })], 'wrong-audience')
    // Dropping the restriction further down the chain is a widening.
    const restricted = await tok(root, alice, { caps: ['/dms/node'], node: other.did })
    await refused(bob, [await tok(alice, bob, { caps: ['/dms/node'], proof: restricted })], 'widened')
  })

  it('a token restricted to this node is accepted', async () => {
    await z.ask({ invoker: alice.did, proofs: [await tok(root, alice, { caps: ['/dms/node'], node: node.did })] })
  })
})
