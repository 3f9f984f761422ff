import fc from 'fast-check'
import { beforeAll, describe, expect, it } from 'vitest'
import type { Identity } from '../../src/identity/identity.js'
import { checkLink } from '../../src/security/chain.js'
import { covers } from '../../src/security/paths.js'
import { reasonOf } from '../../src/security/reasons.js'
import { attOf, decodeToken, type Token } from '../../src/security/ucan.js'
import { HEADER, identities } from './helpers.js'

/**
 * `checkLink` decides whether a delegation attenuates its proof. Signatures play no part in it,
 * so tokens are built unsigned here (a zero signature) to keep 5,000 random pairs fast.
 */
const segment = fc.constantFrom('dms', 'node', 'peers', 'cap', 'nunet', 'hello')
const path = fc.array(segment, { maxLength: 3 }).map(s => s.length === 0 ? '/' : `/${s.join('/')}`)
const grant = fc.record({
  caps: fc.array(path, { maxLength: 3 }),
  topics: fc.array(path, { maxLength: 2 }),
  exp: fc.integer({ min: 100, max: 110 }),
  nbf: fc.option(fc.integer({ min: 90, max: 100 }), { nil: undefined }),
  depth: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }),
  node: fc.option(fc.constantFrom(0, 1), { nil: undefined })
})
type G = typeof grant extends fc.Arbitrary<infer T> ? T : never

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url')
const ZERO_SIG = Buffer.alloc(64).toString('base64url')

describe('attenuation (checkLink)', () => {
  let a: Identity, b: Identity, c: Identity, nodes: string[]
  beforeAll(async () => {
    let n0: Identity, n1: Identity
    [a, b, c, n0, n1] = await identities(5)
    nodes = [n0.did, n1.did]
  })

  function unsigned (iss: string, aud: string, g: G): Token {
    const dms: Record<string, unknown> = {}
    if (g.node !== undefined) dms.node = nodes[g.node]
    if (g.depth !== undefined) dms.depth = g.depth
    const payload = { iss, aud, exp: g.exp, nbf: g.nbf, att: attOf(g.caps, g.topics), fct: Object.keys(dms).length > 0 ? [{ dms }] : [], prf: [] }
    return decodeToken(`${b64(HEADER)}.${b64(payload)}.${ZERO_SIG}`)
  }

  it('refuses each kind of widening with its reason', () => {
    const base: G = { caps: ['/dms/node'], topics: ['/nunet'], exp: 105, nbf: 95, depth: 2, node: 0 }
    const parent = unsigned(a.did, b.did, base)
    const ok = unsigned(b.did, c.did, { ...base, caps: ['/dms/node/peers'], topics: ['/nunet/hello'], exp: 104, nbf: 96, depth: 1 })
    expect(() => { checkLink(parent, ok) }).not.toThrow()
    const cases: Array<[Partial<G>, string, string]> = [
      [{ caps: ['/dms'] }, 'widened', 'capability'],
      [{ topics: ['/'] }, 'widened', 'topic'],
      [{ exp: 106 }, 'widened', 'lifetime'],
      [{ nbf: 94 }, 'widened', 'lifetime'],
      [{ nbf: undefined }, 'widened', 'lifetime'],
      [{ node: 1 }, 'widened', 'node'],
      [{ node: undefined }, 'widened', 'node'],
      [{ depth: 2 }, 'widened', 'depth'],
      [{ depth: undefined }, 'widened', 'depth']
    ]
    for (const [change, reason, detail] of cases) {
      const child = unsigned(b.did, c.did, { ...base, depth: 1, ...change })
      let err: unknown
      try { checkLink(parent, child) } catch (e) { err = e }
      expect({ change, reason: reasonOf(err), detail: (err as { fields?: { detail?: string } })?.fields?.detail }).toEqual({ change, reason, detail })
    }
    const noDepth = unsigned(a.did, b.did, { ...base, depth: 0 })
    expect(() => { checkLink(noDepth, ok) }).toThrow(expect.objectContaining({ fields: expect.objectContaining({ reason: 'depth-exceeded' }) }))
    const misaddressed = unsigned(b.did, a.did, base)
    expect(() => { checkLink(misaddressed, ok) }).toThrow(expect.objectContaining({ fields: expect.objectContaining({ reason: 'broken-chain' }) }))
  })

  it('property: a link that passes never widens capability, topic, lifetime, node or depth', () => {
    fc.assert(fc.property(grant, grant, path, path, (pg, cg, probe, topicProbe) => {
      const parent = unsigned(a.did, b.did, pg)
      const child = unsigned(b.did, c.did, cg)
      try { checkLink(parent, child) } catch { return true }
      const p = parent.grant
      const ch = child.grant
      return (!covers(ch.caps, probe) || covers(p.caps, probe)) &&
        (!covers(ch.topics, topicProbe) || covers(p.topics, topicProbe)) &&
        child.payload.exp <= parent.payload.exp &&
        (parent.payload.nbf === undefined || (child.payload.nbf ?? -1) >= parent.payload.nbf) &&
        (p.node === undefined || ch.node === p.node) &&
        (p.depth === undefined || (p.depth > 0 && ch.depth !== undefined && ch.depth < p.depth))
    }), { numRuns: 5_000 })
  })
})
