import { describe, expect, it } from 'vitest'
import { verifyChain } from '../../src/security/chain.js'
import { createRevocation, verifyRevocation } from '../../src/security/revocations.js'
import { decodeToken, issueToken, tokenId, verifySignature, verifyToken } from '../../src/security/ucan.js'
import { HEADER, HOUR, NOW, NOW_S, decodePart, forge, identities, refusal, tok } from './helpers.js'

describe('tokens', () => {
  it('issue → decode → verify round-trips, with a nonce making twins distinct', async () => {
    const [a, b] = await identities(2)
    const t1 = await issueToken(a, { audience: b.did, caps: ['/dms'], exp: NOW_S + HOUR })
    const t2 = await issueToken(a, { audience: b.did, caps: ['/dms'], exp: NOW_S + HOUR })
    expect(t1).not.toBe(t2)
    expect(tokenId(t1)).toMatch(/^bafkrei[a-z2-7]{52}$/)
    await verifySignature(decodeToken(t1))
    expect((await verifyToken(t1, { now: NOW })).payload.iss).toBe(a.did)
  })

  it('ignores capabilities of other schemes, refuses unknown dms abilities and bad dms facts', async () => {
    const [a, b] = await identities(2)
    const base = { iss: a.did, aud: b.did, exp: NOW_S + HOUR, prf: [] }
    const mixed = forge(a, HEADER, { ...base, att: [{ with: 'db://x/users', can: 'db/READ' }, { with: 'dms:/dms/node', can: 'dms/invoke' }] })
    expect(decodeToken(mixed).grant).toEqual({ caps: ['/dms/node'], topics: [] })
    const bad = [
      { att: [{ with: 'dms:/dms', can: 'dms/own' }] },
      { att: [{ with: 'dms:dms', can: 'dms/invoke' }] },
      { att: [], fct: [{ dms: { depth: -1 } }] },
      { att: [], fct: [{ dms: { depth: 1, extra: true } }] },
      { att: [], fct: [{ dms: {} }, { dms: {} }] },
      { att: [], exp: 1.5 }
    ]
    for (const b2 of bad) expect(() => decodeToken(forge(a, HEADER, { ...base, ...b2 }))).toThrow(expect.objectContaining({ name: 'InvalidToken', fields: expect.objectContaining({ reason: 'malformed' }) }))
    expect(() => decodeToken(forge(a, HEADER, { ...base, att: [], fct: [{ dms: { node: 'did:key:zzz' } }] }))).toThrow(expect.objectContaining({ fields: expect.objectContaining({ reason: 'bad-did' }) }))
  })

  it('refuses more than one proof per dms link, and chains deeper than the limit', async () => {
    const ids = await identities(11)
    const [a, b, c] = ids
    const p1 = await tok(a, b)
    const p2 = await tok(a, b)
    const two = forge(b, HEADER, { ...decodePart(await tok(b, c), 1), prf: [p1, p2] })
    expect(await refusal(verifyChain(two))).toMatchObject({ reason: 'broken-chain' })
    let jwt = await tok(ids[0], ids[1], { caps: ['/'] })
    for (let i = 1; i < 10; i++) jwt = await tok(ids[i], ids[i + 1], { caps: ['/'], proof: jwt })
    expect(await refusal(verifyChain(jwt))).toMatchObject({ reason: 'too-deep' })
  })

  it('revocation records verify with the issuer\'s DID and bind the token when carried', async () => {
    const [a, b] = await identities(2)
    const t = await tok(a, b)
    const r = createRevocation(a, t)
    expect(r.revoke).toBe(tokenId(t))
    verifyRevocation(r)
    verifyRevocation({ ...r, token: undefined })
    expect(() => { verifyRevocation({ ...r, iss: b.did }) }).toThrow(expect.objectContaining({ fields: expect.objectContaining({ reason: 'bad-signature' }) }))
    expect(() => { verifyRevocation({ ...r, token: t + 'x' }) }).toThrow(expect.objectContaining({ name: 'InvalidToken' }))
  })
})
