import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { FORM_SIGNED, decodeEnvelope } from '../../src/actor/envelope.js'
import { BadRequest } from '../../src/lib/errors.js'

/**
 * Envelope decoding is the first thing done with bytes from the network, before any signature:
 * on any input it must either decode or throw `BadRequest`, never crash with anything else.
 */
function decodesOrBadRequest (frame: Uint8Array): boolean {
  try {
    decodeEnvelope(frame)
    return true
  } catch (err) {
    if (err instanceof BadRequest) return true
    throw err
  }
}

/** A frame with the right version and a header length that fits, around an arbitrary header. */
function framed (header: Uint8Array, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + header.length + payload.length + 64)
  out[0] = FORM_SIGNED
  new DataView(out.buffer).setUint32(1, header.length)
  out.set(header, 5)
  out.set(payload, 5 + header.length)
  return out
}

const enc = new TextEncoder()

describe('decodeEnvelope on hostile bytes', () => {
  it('property: random bytes never crash, and are refused with BadRequest', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 256 }), bytes => {
      expect(() => decodeEnvelope(bytes)).toThrow(BadRequest)
      return true
    }), { numRuns: 30_000 })
  })

  it('property: random bytes behind a valid prefix decode or throw BadRequest', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), fc.uint8Array({ maxLength: 64 }), (h, p) => decodesOrBadRequest(framed(h, p))), { numRuns: 20_000 })
  })

  it('property: arbitrary JSON headers decode or throw BadRequest', () => {
    const handle = fc.record({ id: fc.string(), did: fc.string(), addr: fc.record({ peer: fc.string(), inbox: fc.string() }) }, { requiredKeys: [] })
    const header = fc.oneof(
      fc.jsonValue(),
      fc.record({ v: fc.constantFrom(1, 2, '1'), to: handle, from: handle, be: fc.string(), nonce: fc.string(), exp: fc.oneof(fc.integer(), fc.double()), cap: fc.array(fc.string()) }, { requiredKeys: [] })
    )
    fc.assert(fc.property(header, fc.jsonValue(), (h, p) => decodesOrBadRequest(framed(enc.encode(JSON.stringify(h) ?? ''), enc.encode(JSON.stringify(p) ?? '')))), { numRuns: 10_000 })
  })

  it('a frame whose header length points past the end is refused', () => {
    const f = framed(enc.encode('{}'), new Uint8Array())
    new DataView(f.buffer).setUint32(1, 0xffffffff)
    expect(() => decodeEnvelope(f)).toThrow(BadRequest)
  })
})
