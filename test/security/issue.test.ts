import { beforeAll, describe, expect, it } from 'vitest'
import type { Identity } from '../../src/identity/identity.js'
import { verifyChain } from '../../src/security/chain.js'
import { delegateTokens, expiryFrom, grantToken, type GrantRequest } from '../../src/security/issue.js'
import { decodeToken } from '../../src/security/ucan.js'
import { HOUR, NOW, NOW_S, identities, refusal, testAuthz } from './helpers.js'

describe('grant and delegate', () => {
  let node: Identity, owner: Identity, org: Identity, user: Identity, other: Identity
  beforeAll(async () => { [node, owner, org, user, other] = await identities(5) })

  const req = (r: Partial<GrantRequest> = {}): GrantRequest => ({ subject: user.did, caps: ['/dms/node/peers'], exp: NOW_S + HOUR, ...r })

  it('reads --expiry (RFC 3339 with a zone) or --duration, exactly one', () => {
    expect(expiryFrom({ duration: '1h' }, NOW)).toBe(NOW_S + HOUR)
    expect(expiryFrom({ expiry: '2030-01-01T02:00:00Z' }, NOW)).toBe(NOW_S + 2 * HOUR)
    expect(expiryFrom({ expiry: '2030-01-01T03:00:00+01:00' }, NOW)).toBe(NOW_S + 2 * HOUR)
    for (const bad of [{}, { expiry: '2030-01-01T02:00:00Z', duration: '1h' }, { expiry: '2030-01-01' }, { expiry: '2029-01-01T00:00:00Z' }, { duration: 'soon' }]) {
      expect(() => expiryFrom(bad, NOW)).toThrow(expect.objectContaining({ name: 'InvalidArgument' }))
    }
  })

  it('grant issues a root token in the documented shape', async () => {
    const jwt = await grantToken(owner, req({ caps: ['/dms/node'], topics: ['/nunet'], node: node.did, depth: 1 }))
    const t = decodeToken(jwt)
    expect(t.header).toEqual({ alg: 'EdDSA', typ: 'JWT', ucv: '0.8.1' })
    expect(t.payload).toMatchObject({
      iss: owner.did,
      aud: user.did,
      exp: NOW_S + HOUR,
      att: [{ with: 'dms:/dms/node', can: 'dms/invoke' }, { with: 'dms:/nunet', can: 'dms/broadcast' }],
      fct: [{ dms: { node: node.did, depth: 1 } }],
      prf: []
    })
    expect(await refusal(grantToken(owner, req({ caps: ['/dms/'] })))).toMatchObject({ name: 'InvalidArgument' })
    expect(await refusal(grantToken(owner, req({ caps: [], topics: [] })))).toMatchObject({ name: 'InvalidArgument' })
    expect(await refusal(grantToken(owner, req({ node: 'did:key:bad' })))).toMatchObject({ name: 'InvalidArgument' })
    expect(await refusal(grantToken(owner, req({ depth: -1 })))).toMatchObject({ name: 'InvalidArgument' })
  })

  it('delegate chains on a held token, inherits its node and remaining depth, and is accepted', async () => {
    const held = await grantToken(owner, { subject: org.did, caps: ['/dms/node'], node: node.did, depth: 2, exp: NOW_S + 2 * HOUR })
    const [jwt] = await delegateTokens(org, [await verifyChain(held)], req(), 'no', NOW)
    const t = decodeToken(jwt)
    expect(t.grant).toEqual({ caps: ['/dms/node/peers'], topics: [], node: node.did, depth: 1 })
    expect(t.payload.prf).toEqual([held])
    const z = await testAuthz(node, { roots: [owner.did] })
    await z.ask({ invoker: user.did, proofs: [jwt] })
  })

  it('refuses to delegate more than it holds, saying why (not-held)', async () => {
    const held = [await verifyChain(await grantToken(owner, { subject: org.did, caps: ['/dms/node'], depth: 1, exp: NOW_S + HOUR }))]
    const cases: Array<Partial<GrantRequest>> = [
      { caps: ['/dms'] },
      { topics: ['/nunet'] },
      { exp: NOW_S + 2 * HOUR },
      { depth: 1 }
    ]
    for (const c of cases) {
      expect(await refusal(delegateTokens(org, held, req(c), 'no', NOW))).toMatchObject({ name: 'Unauthorized', reason: 'not-held' })
    }
    // A token held by someone else is no help; neither is an exhausted depth.
    expect(await refusal(delegateTokens(other, held, req(), 'no', NOW))).toMatchObject({ reason: 'not-held' })
    const exhausted = [await verifyChain(await grantToken(owner, { subject: org.did, caps: ['/'], depth: 0, exp: NOW_S + HOUR }))]
    expect(await refusal(delegateTokens(org, exhausted, req(), 'no', NOW))).toMatchObject({ reason: 'not-held' })
  })

  it('--self-sign also/only adds or substitutes a token on the delegator\'s own authority', async () => {
    const held = [await verifyChain(await grantToken(owner, { subject: org.did, caps: ['/dms'], exp: NOW_S + HOUR }))]
    const also = await delegateTokens(org, held, req(), 'also', NOW)
    expect(also.map(j => decodeToken(j).payload.prf.length)).toEqual([1, 0])
    const only = await delegateTokens(org, [], req({ caps: ['/anything'] }), 'only', NOW)
    expect(only.map(j => decodeToken(j).payload.iss)).toEqual([org.did])
  })
})
