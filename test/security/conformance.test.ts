import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { reasonOf } from '../../src/security/reasons.js'
import { tokenId, verifyToken } from '../../src/security/ucan.js'
import { NOW } from './helpers.js'

/**
 * UCAN 0.8.1 spec fixtures (github.com/ucan-wg/spec fixtures/0.8.1, vendored under
 * test/fixtures/ucan with their origin and licences in its PROVENANCE.md) through dms's token verification (`verifyToken`:
 * structure, alg, did:key, signature, time, proof addressing and lifetime nesting).
 *
 * Expected counts, with every deviation named (specs/capabilities.md, "Conformance"):
 * - valid.json: 13 of 15 verify. The two refused carry an `nbf` in 2123 and 2122 on the outer
 *   token; no clock can accept them and also refuse invalid.json's "UCAN is not ready to be used"
 *   (nbf 2122) or accept "UCAN has not expired" (exp 2122). We check time at a fixed clock
 *   (2030-01-01), so they are refused as `not-yet-valid`.
 * - invalid.json: 40 of 40 refused.
 */
// Inside the repository, found from this file (not the working directory): a fresh clone anywhere runs it.
const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'ucan', 'spec-0.8.1')

interface Fixture { comment: string, token: string }
const load = (name: string): Fixture[] => JSON.parse(readFileSync(join(FIXTURES, name), 'utf8')) as Fixture[]

const VALID_BUT_NOT_YET = new Set([
  'Witnesses are ready to be used before the delegated UCAN',
  'Witness is ready to be used at the same time as the delegated UCAN'
])

/** The reason each invalid.json case is refused with, in file order. */
const INVALID_REASONS = [
  'malformed', 'malformed', 'malformed', 'malformed', 'expired', 'not-yet-valid', 'widened', 'not-yet-valid',
  'broken-chain', 'malformed', 'broken-chain', 'malformed', 'malformed', 'unknown-alg', 'malformed', 'malformed',
  'malformed', 'malformed', 'malformed', 'malformed', 'malformed', 'malformed', 'bad-did', 'bad-did',
  'malformed', 'malformed', 'bad-did', 'bad-did', 'malformed', 'malformed', 'malformed', 'malformed',
  'malformed', 'malformed', 'malformed', 'malformed', 'malformed', 'malformed', 'malformed', 'malformed'
]

async function outcome (f: Fixture): Promise<string> {
  try {
    await verifyToken(f.token, { now: NOW })
    return 'ok'
  } catch (err) {
    const r = reasonOf(err)
    if (r === undefined) throw err // an untyped failure is a bug, whatever the fixture says
    return r
  }
}

describe('UCAN 0.8.1 conformance', () => {
  it('valid.json: 13/15 verify; the 2 with a future nbf are refused as not-yet-valid', async () => {
    const cases = load('valid.json')
    expect(cases).toHaveLength(15)
    const results = await Promise.all(cases.map(async c => ({ c: c.comment, r: await outcome(c) })))
    const passed = results.filter(x => x.r === 'ok')
    console.info(`spec-0.8.1/valid.json: ${passed.length}/${cases.length} verify`)
    for (const x of results) {
      expect({ c: x.c, r: x.r }).toEqual({ c: x.c, r: VALID_BUT_NOT_YET.has(x.c) ? 'not-yet-valid' : 'ok' })
    }
    expect(passed).toHaveLength(13)
  })

  it('invalid.json: 40/40 refused, each with a typed reason', async () => {
    const cases = load('invalid.json')
    expect(cases).toHaveLength(40)
    const results = await Promise.all(cases.map(async c => ({ c: c.comment, r: await outcome(c) })))
    const refused = results.filter(x => x.r !== 'ok')
    console.info(`spec-0.8.1/invalid.json: ${refused.length}/${cases.length} refused; reasons: ${JSON.stringify(Object.fromEntries(refused.map(x => [x.c, x.r])))}`)
    expect(results.filter(x => x.r === 'ok').map(x => x.c)).toEqual([])
    expect(results.map(x => x.r)).toEqual(INVALID_REASONS)
  })
})

describe('UCAN 0.10.0 token ids', () => {
  // Our token id is the CID 0.10.0 uses to name proofs: the SHA2-256 case of cid.json matches;
  // the BLAKE3 case is not supported (no BLAKE3 hasher, and dms only makes SHA2-256 ids).
  it('cid.json: 1/2 — the SHA2-256 case', () => {
    const cases = JSON.parse(readFileSync(join(FIXTURES, '..', 'conformance-0.10.0', 'cid.json'), 'utf8')) as Array<{ inputs: { token: string, hasher: string }, outputs: { cid: string } }>
    const sha = cases.filter(c => c.inputs.hasher === 'SHA2-256')
    expect(sha).toHaveLength(1)
    expect(tokenId(sha[0].inputs.token)).toBe(sha[0].outputs.cid)
  })
})
