import { describe, expect, it } from 'vitest'
import { FORM_HOST, FORM_SIGNED, decodeEnvelope, encodeEnvelope, newNonce, peekHeader, verifyEnvelope } from '../../src/actor/envelope.js'
import type { Envelope } from '../../src/actor/types.js'
import { newIdentity } from '../../src/identity/identity.js'

const id = await newIdentity()
const handle = { id: id.did, did: id.did, addr: { peer: id.peerId, inbox: 'root' } }
const base: Envelope = { v: 1, to: handle, from: handle, be: '/public/status', nonce: newNonce(), exp: Date.now() + 30_000, cont: '/dms/reply/x1', msg: { a: [1, 'b'] } }

/** A frame with a hand-made header (signed, so only the header is at fault). */
function withHeader (header: unknown): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(header))
  const p = new TextEncoder().encode('{}')
  const out = new Uint8Array(5 + h.length + p.length + 64)
  out[0] = FORM_SIGNED
  new DataView(out.buffer).setUint32(1, h.length)
  out.set(h, 5)
  out.set(p, 5 + h.length)
  out.set(id.sign(out.subarray(0, out.length - 64)), out.length - 64)
  return out
}

describe('envelope codec', () => {
  it('round-trips and verifies the exact bytes', () => {
    const frame = encodeEnvelope(base, id.sign)
    const d = decodeEnvelope(frame)
    expect(d.envelope).toEqual(base)
    expect(verifyEnvelope(d)).toBe(true)
    expect(peekHeader(frame.subarray(0, 600))?.cont).toBe('/dms/reply/x1')
  })

  it('round-trips a host-authenticated envelope: no signature trailer, and it never verifies', () => {
    const signed = encodeEnvelope(base, id.sign)
    const frame = encodeEnvelope(base)
    expect(frame[0]).toBe(FORM_HOST)
    expect(signed[0]).toBe(FORM_SIGNED)
    expect(frame.length).toBe(signed.length - 64)
    const d = decodeEnvelope(frame)
    expect(d.envelope).toEqual(base)
    expect(d.signature).toBeUndefined()
    expect(verifyEnvelope(d)).toBe(false)
    expect(peekHeader(frame)?.be).toBe('/public/status')
    // the same bytes marked as signed: this payload is shorter than a signature, so the frame is too short
    const relabelled = new Uint8Array(frame)
    relabelled[0] = FORM_SIGNED
    expect(() => decodeEnvelope(relabelled)).toThrow(expect.objectContaining({ name: 'BadRequest' }))
    expect(() => decodeEnvelope(Uint8Array.of(3, ...frame.subarray(1)))).toThrow(expect.objectContaining({ name: 'BadRequest' }))
  })

  it('writes each handle as it is now, whatever was encoded before under the same id', () => {
    const from = { id: id.did, did: id.did, addr: { peer: id.peerId, inbox: 'root' } }
    expect(decodeEnvelope(encodeEnvelope({ ...base, from })).envelope.from.addr.inbox).toBe('root')
    from.addr.inbox = 'child'
    expect(decodeEnvelope(encodeEnvelope({ ...base, from })).envelope.from.addr.inbox).toBe('child')
    const other = { ...from, addr: { ...from.addr, inbox: 'cli' } }
    const d = decodeEnvelope(encodeEnvelope({ ...base, from: other, to: from }))
    expect([d.envelope.from.addr.inbox, d.envelope.to.addr.inbox]).toEqual(['cli', 'child'])
  })

  it('writes a node\'s root handle as its DID alone, and reads it back whole', () => {
    const other = { id: id.did, did: id.did, addr: { peer: id.peerId, inbox: 'cli' } }
    const frame = encodeEnvelope({ ...base, from: other })
    const header = JSON.parse(new TextDecoder().decode(frame.subarray(5, 5 + new DataView(frame.buffer, frame.byteOffset).getUint32(1)))) as Record<string, unknown>
    expect(header.to).toBe(id.did)
    expect(header.from).toEqual(other)
    const d = decodeEnvelope(frame)
    expect(d.envelope.to).toEqual(handle)
    expect(Object.isFrozen(d.envelope.to)).toBe(true)
    // a handle that only looks like a root handle (its peer is not its DID's key) keeps every field
    const elsewhere = { id: id.did, did: id.did, addr: { peer: 'QmNotThePeerOfThatDid', inbox: 'root' } }
    expect(decodeEnvelope(encodeEnvelope({ ...base, to: elsewhere })).envelope.to).toEqual(elsewhere)
  })

  it.each([
    ['not a DID', 'alice'],
    ['a DID that is no Ed25519 key', 'did:key:z6LSbysY2xFMRpGMhb7tFTLMpeuPRaqaWM1yECx2AtzE3KCc'],
    ['a DID that is not base58', 'did:key:z0OIl0OIl0OIl0OIl']
  ])('refuses a string handle that is %s', (_name, to) => {
    const { msg: _msg, ...h } = base
    expect(() => decodeEnvelope(withHeader({ ...h, to }))).toThrow(expect.objectContaining({ name: 'BadRequest' }))
  })

  it('nonces are unique', () => {
    const n = new Set(Array.from({ length: 10_000 }, newNonce))
    expect(n.size).toBe(10_000)
  })

  it.each([
    ['a wrong version', { ...base, v: 2 }],
    ['a behaviour that is not a path', { ...base, be: 'dms/node' }],
    ['a short nonce', { ...base, nonce: 'x' }],
    ['a fractional expiry', { ...base, exp: 1.5 }],
    ['a handle without addr', { ...base, to: { id: id.did, did: id.did } }],
    ['a sender that is not a did:key', { ...base, from: { ...handle, id: 'did:web:example.com' } }],
    ['too many tokens', { ...base, cap: Array.from({ length: 33 }, () => 't') }],
    ['tokens that are not strings', { ...base, cap: [1] }],
    ['an array', [1, 2]]
  ])('refuses %s with BadRequest', (_name, header) => {
    const { msg: _msg, ...h } = header as Envelope
    expect(() => decodeEnvelope(withHeader(Array.isArray(header) ? header : h))).toThrow(expect.objectContaining({ name: 'BadRequest' }))
  })

  it('keeps only known header fields', () => {
    const { msg: _msg, ...h } = base
    const d = decodeEnvelope(withHeader({ ...h, extra: 'x', ['__proto__']: { polluted: true } }))
    expect(d.envelope).not.toHaveProperty('extra')
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })

  it('refuses truncated frames and bad payloads', () => {
    const frame = encodeEnvelope(base, id.sign)
    expect(() => decodeEnvelope(frame.subarray(0, 20))).toThrow(expect.objectContaining({ name: 'BadRequest' }))
    const broken = new Uint8Array(frame)
    broken[broken.length - 65] = 0xff // last payload byte: not UTF-8
    expect(() => decodeEnvelope(broken)).toThrow(expect.objectContaining({ name: 'BadRequest' }))
  })
})
