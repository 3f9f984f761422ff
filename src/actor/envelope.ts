import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import { BadRequest } from '../lib/errors.js'
import { verifyWithDid, type Did } from '../identity/did.js'
import type { Envelope, Handle } from './types.js'

/**
 * Wire form of an envelope (the bytes inside one transport frame):
 *
 *   0      u8   version (1)
 *   1..4   u32  header length H, big-endian
 *   5..    H    header: UTF-8 JSON {v,to,from,be,nonce,exp,cont?,topic?,cap?}
 *   ..     P    payload: UTF-8 JSON (the message)
 *   last   64   Ed25519 signature by `from.id` over every byte before it
 *
 * The header comes first and apart from the payload so that a receiver can answer an oversized
 * frame from its first bytes alone, and so that routing never parses the payload. The signature
 * covers the exact bytes that travel: nothing is re-encoded before verification.
 */
export const ENVELOPE_VERSION = 1
const PREFIX = 5
const SIG = 64
/** Header (routing + capability tokens) limit; the oversize answer needs the header in the head. */
export const MAX_HEADER_BYTES = 64 * 1024

const DidSchema = z.string().min(9).max(256).startsWith('did:key:z') as unknown as z.ZodType<Did>
const HandleSchema = z.object({
  id: DidSchema,
  did: DidSchema,
  addr: z.object({ peer: z.string().min(1).max(128), inbox: z.string().min(1).max(128) })
})
const PathSchema = z.string().min(1).max(512).startsWith('/')
const HeaderSchema = z.object({
  v: z.literal(ENVELOPE_VERSION),
  to: HandleSchema,
  from: HandleSchema,
  be: PathSchema,
  nonce: z.string().min(8).max(64),
  exp: z.number().int().positive(),
  cont: PathSchema.optional(),
  topic: z.string().min(1).max(256).optional(),
  cap: z.array(z.string().max(MAX_HEADER_BYTES)).max(32).optional()
})
export type Header = Omit<Envelope, 'msg'>

export interface DecodedEnvelope {
  envelope: Envelope
  /** Bytes the signature covers. */
  signed: Uint8Array
  signature: Uint8Array
}

const enc = new TextEncoder()
const dec = new TextDecoder('utf-8', { fatal: true })

// A nonce needs to be unique per sender, not unpredictable (the envelope is signed): 12 random
// bytes per process, then a counter. Two processes with the same key (two CLI runs of one user)
// differ in the random part. One randomBytes call per process instead of one per envelope.
const NONCE_PREFIX = randomBytes(12).toString('base64url')
let nonceCounter = 0

export function newNonce (): string {
  nonceCounter = (nonceCounter + 1) % Number.MAX_SAFE_INTEGER
  return `${NONCE_PREFIX}${nonceCounter.toString(36)}`
}

/** Encodes and signs; `sign` is the sender's key (`from.id`). */
export function encodeEnvelope (env: Envelope, sign: (data: Uint8Array) => Uint8Array): Uint8Array {
  const { msg, ...header } = env
  const h = enc.encode(JSON.stringify(header))
  if (h.length > MAX_HEADER_BYTES) throw new BadRequest(`envelope header is ${h.length} bytes, the limit is ${MAX_HEADER_BYTES} (too many or too large capability tokens)`, { limit: MAX_HEADER_BYTES })
  const p = enc.encode(msg === undefined ? 'null' : JSON.stringify(msg))
  const out = new Uint8Array(PREFIX + h.length + p.length + SIG)
  out[0] = ENVELOPE_VERSION
  new DataView(out.buffer).setUint32(1, h.length)
  out.set(h, PREFIX)
  out.set(p, PREFIX + h.length)
  const body = out.subarray(0, out.length - SIG)
  out.set(sign(body), out.length - SIG)
  return out
}

function parseHeader (bytes: Uint8Array): Header {
  let json: unknown
  try { json = JSON.parse(dec.decode(bytes)) } catch { throw new BadRequest('envelope header is not UTF-8 JSON') }
  const r = HeaderSchema.safeParse(json)
  if (!r.success) throw new BadRequest(`envelope header is malformed: ${r.error.issues.map(i => `${i.path.join('.') || '(root)'}: ${i.message}`).slice(0, 3).join('; ')}`)
  return r.data as Header
}

/** Decodes a frame without checking the signature. Throws `BadRequest` on any malformation. */
export function decodeEnvelope (frame: Uint8Array): DecodedEnvelope {
  if (frame.length < PREFIX + 2 + SIG) throw new BadRequest(`frame of ${frame.length} bytes is too short to be an envelope`)
  if (frame[0] !== ENVELOPE_VERSION) throw new BadRequest(`unknown envelope version ${frame[0]}`)
  const hlen = new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(1)
  if (hlen > MAX_HEADER_BYTES || PREFIX + hlen + SIG > frame.length) throw new BadRequest(`envelope header length ${hlen} does not fit the frame`)
  const header = parseHeader(frame.subarray(PREFIX, PREFIX + hlen))
  let msg: unknown
  try { msg = JSON.parse(dec.decode(frame.subarray(PREFIX + hlen, frame.length - SIG))) } catch { throw new BadRequest('envelope payload is not UTF-8 JSON') }
  return {
    envelope: { ...header, msg },
    signed: frame.subarray(0, frame.length - SIG),
    signature: frame.subarray(frame.length - SIG)
  }
}

/**
 * Reads the header from the first bytes of a frame (used for oversized frames, whose body was
 * skipped). Returns undefined when the head does not hold a well-formed header.
 */
export function peekHeader (head: Uint8Array): Header | undefined {
  try {
    if (head.length < PREFIX || head[0] !== ENVELOPE_VERSION) return undefined
    const hlen = new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(1)
    if (hlen > MAX_HEADER_BYTES || PREFIX + hlen > head.length) return undefined
    return parseHeader(head.subarray(PREFIX, PREFIX + hlen))
  } catch { return undefined }
}

export function verifyEnvelope (d: DecodedEnvelope): boolean {
  return verifyWithDid(d.envelope.from.id, d.signed, d.signature)
}

export function sameHandle (a: Handle, b: Handle): boolean {
  return a.id === b.id && a.addr.peer === b.addr.peer && a.addr.inbox === b.addr.inbox
}
