import { randomBytes } from 'node:crypto'
import { BadRequest } from '../lib/errors.js'
import { peerIdFromDid, verifyWithDid, type Did } from '../identity/did.js'
import { ROOT_INBOX, type Envelope, type Handle } from './types.js'

/**
 * Wire form of an envelope (the bytes inside one transport frame):
 *
 *   0      u8   form: 1 = signed, 2 = host-authenticated (no signature)
 *   1..4   u32  header length H, big-endian
 *   5..    H    header: UTF-8 JSON {v,to,from,be,nonce,exp,cont?,topic?,cap?}
 *   ..     P    payload: UTF-8 JSON (the message)
 *   last   64   form 1 only: Ed25519 signature by `from.id` over every byte before it
 *
 * The header comes first and apart from the payload so that a receiver can answer an oversized
 * frame from its first bytes alone, and so that routing never parses the payload. The signature
 * covers the exact bytes that travel: nothing is re-encoded before verification. A form-2
 * envelope is only accepted from the host that the channel itself authenticated (Noise, or
 * gossipsub's StrictSign) when `from.id` is that host's key: see specs/protocol.md.
 */
export const ENVELOPE_VERSION = 1
/** Signed by `from.id` (64-byte Ed25519 trailer). */
export const FORM_SIGNED = 1
/** Sent by the host the transport authenticated, as itself: no signature trailer. */
export const FORM_HOST = 2
const PREFIX = 5
const SIG = 64
/** Header (routing + capability tokens) limit; the oversize answer needs the header in the head. */
export const MAX_HEADER_BYTES = 64 * 1024

// The header is validated by hand: it is checked on every frame, and a schema library costs
// several times more here. The rules are those the table in specs/protocol.md states.
const MAX_DID = 256
const MAX_PEER = 128
const MAX_PATH = 512
const MAX_TOPIC = 256
const MAX_TOKENS = 32

function str (v: unknown, min: number, max: number): v is string {
  return typeof v === 'string' && v.length >= min && v.length <= max
}
function path (v: unknown): v is string {
  return str(v, 1, MAX_PATH) && v.charCodeAt(0) === 0x2f // '/'
}
function did (v: unknown): v is Did {
  return str(v, 10, MAX_DID) && v.startsWith('did:key:z')
}
function handle (v: unknown, field: string): Handle {
  if (typeof v === 'string') return rootHandle(v, field)
  if (typeof v !== 'object' || v === null) throw bad(`${field}: expected a handle`)
  const h = v as Record<string, unknown>
  const addr = h.addr as Record<string, unknown> | null | undefined
  if (!did(h.id)) throw bad(`${field}.id: expected a did:key`)
  if (!did(h.did)) throw bad(`${field}.did: expected a did:key`)
  if (typeof addr !== 'object' || addr === null) throw bad(`${field}.addr: expected {peer, inbox}`)
  if (!str(addr.peer, 1, MAX_PEER)) throw bad(`${field}.addr.peer: expected a peer id`)
  if (!str(addr.inbox, 1, MAX_PEER)) throw bad(`${field}.addr.inbox: expected an inbox name`)
  return { id: h.id, did: h.did, addr: { peer: addr.peer, inbox: addr.inbox } }
}

/**
 * The handle of a node's root actor, written on the wire as its DID alone (id = did, the PeerId
 * is the DID's key, inbox `root`). The few such handles a node meets recur on every envelope:
 * each is built once (the PeerId conversion is the costly part) and shared, frozen.
 */
const rootHandles = new Map<string, Readonly<Handle>>()
const ROOT_HANDLES_MAX = 4096

function rootHandle (v: string, field: string): Handle {
  let h = rootHandles.get(v)
  if (h === undefined) {
    if (!did(v)) throw bad(`${field}: expected a handle or a node's did:key`)
    let peer: string
    try { peer = peerIdFromDid(v) } catch { throw bad(`${field}: not an Ed25519 did:key`) }
    h = Object.freeze({ id: v, did: v, addr: Object.freeze({ peer, inbox: ROOT_INBOX }) })
    if (rootHandles.size >= ROOT_HANDLES_MAX) rootHandles.clear()
    rootHandles.set(v, h)
  }
  return h as Handle
}
function bad (what: string): BadRequest {
  return new BadRequest(`envelope header is malformed: ${what}`)
}

/**
 * Validates a parsed header and copies exactly its known fields into a new envelope carrying
 * `msg` (one object built per frame). Throws `BadRequest`.
 */
function checkHeader (json: unknown, msg: unknown): Envelope {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad('expected an object')
  const h = json as Record<string, unknown>
  if (h.v !== ENVELOPE_VERSION) throw bad(`v: expected ${ENVELOPE_VERSION}`)
  if (!path(h.be)) throw bad('be: expected a behaviour path')
  if (!str(h.nonce, 8, 64)) throw bad('nonce: expected 8 to 64 characters')
  if (typeof h.exp !== 'number' || !Number.isSafeInteger(h.exp) || h.exp <= 0) throw bad('exp: expected unix milliseconds')
  if (h.cont !== undefined && !path(h.cont)) throw bad('cont: expected a behaviour path')
  if (h.topic !== undefined && !str(h.topic, 1, MAX_TOPIC)) throw bad('topic: expected 1 to 256 characters')
  if (h.cap !== undefined && (!Array.isArray(h.cap) || h.cap.length > MAX_TOKENS || !h.cap.every(t => str(t, 0, MAX_HEADER_BYTES)))) throw bad(`cap: expected at most ${MAX_TOKENS} token strings`)
  const env: Envelope = { v: ENVELOPE_VERSION, to: handle(h.to, 'to'), from: handle(h.from, 'from'), be: h.be, nonce: h.nonce, exp: h.exp, msg }
  if (h.cont !== undefined) env.cont = h.cont as string
  if (h.topic !== undefined) env.topic = h.topic as string
  if (h.cap !== undefined) env.cap = h.cap as string[]
  return env
}
export type Header = Omit<Envelope, 'msg'>

export interface DecodedEnvelope {
  envelope: Envelope
  /** Bytes the signature covers. */
  signed: Uint8Array
  /** Absent for a host-authenticated (form 2) envelope. */
  signature?: Uint8Array
}

const dec = new TextDecoder('utf-8', { fatal: true })

// A nonce needs to be unique per sender, not unpredictable (the envelope is authenticated, by its
// signature or by its host's channel): 12 random bytes per process, then a counter. Two processes
// with the same key (two CLI runs of one user) differ in the random part. One randomBytes call per
// process instead of one per envelope.
const NONCE_PREFIX = randomBytes(12).toString('base64url')
let nonceCounter = 0

export function newNonce (): string {
  nonceCounter = (nonceCounter + 1) % Number.MAX_SAFE_INTEGER
  return `${NONCE_PREFIX}${nonceCounter.toString(36)}`
}

/**
 * Handles' JSON, remembered by actor id: the same few handles recur on every envelope (a node's
 * own, its callers'), including ones decoded afresh from each request. Bounded; an entry is used
 * only if every field still matches. A node's root handle is written as its DID alone.
 */
interface HandleJson { did: string, peer: string, inbox: string, json: string }
const handleJsonCache = new Map<string, HandleJson>()
const HANDLE_JSON_CACHE_MAX = 4096

function handleJson (h: Handle): string {
  const c = handleJsonCache.get(h.id)
  if (c !== undefined && c.did === h.did && c.peer === h.addr.peer && c.inbox === h.addr.inbox) return c.json
  const json = isRootHandle(h) ? JSON.stringify(h.id) : JSON.stringify({ id: h.id, did: h.did, addr: { peer: h.addr.peer, inbox: h.addr.inbox } })
  if (handleJsonCache.size >= HANDLE_JSON_CACHE_MAX) handleJsonCache.clear()
  handleJsonCache.set(h.id, { did: h.did, peer: h.addr.peer, inbox: h.addr.inbox, json })
  return json
}

function isRootHandle (h: Handle): boolean {
  if (h.id !== h.did || h.addr.inbox !== ROOT_INBOX) return false
  // through the decoder's table: each DID's PeerId is computed once for both directions
  try { return rootHandle(h.id, 'handle').addr.peer === h.addr.peer } catch { return false }
}

/** The header's JSON: every field of the envelope but `msg`. */
function headerJson (env: Envelope): string {
  let h = `{"v":${ENVELOPE_VERSION},"to":${handleJson(env.to)},"from":${handleJson(env.from)},"be":${JSON.stringify(env.be)},"nonce":${JSON.stringify(env.nonce)},"exp":${JSON.stringify(env.exp)}`
  if (env.cont !== undefined) h += `,"cont":${JSON.stringify(env.cont)}`
  if (env.topic !== undefined) h += `,"topic":${JSON.stringify(env.topic)}`
  if (env.cap !== undefined) h += `,"cap":${JSON.stringify(env.cap)}`
  return h + '}'
}

/**
 * Encodes, and signs with `sign` (the key of `from.id`) when given. Without `sign` the envelope is
 * host-authenticated (form 2): only for a node's own envelopes on a channel that authenticates it.
 */
export function encodeEnvelope (env: Envelope, sign?: (data: Uint8Array) => Uint8Array): Uint8Array {
  const header = headerJson(env)
  const payload = JSON.stringify(env.msg) ?? 'null'
  const hlen = Buffer.byteLength(header)
  if (hlen > MAX_HEADER_BYTES) throw new BadRequest(`envelope header is ${hlen} bytes, the limit is ${MAX_HEADER_BYTES} (too many or too large capability tokens)`, { limit: MAX_HEADER_BYTES })
  const plen = Buffer.byteLength(payload)
  const trailer = sign === undefined ? 0 : SIG
  // Small frames come from Node's buffer pool (no ArrayBuffer of their own); every byte is written below.
  const out = Buffer.allocUnsafe(PREFIX + hlen + plen + trailer)
  out[0] = sign === undefined ? FORM_HOST : FORM_SIGNED
  out.writeUInt32BE(hlen, 1)
  out.write(header, PREFIX, hlen, 'utf8')
  out.write(payload, PREFIX + hlen, plen, 'utf8')
  if (sign !== undefined) {
    const body = out.subarray(0, out.length - SIG)
    out.set(sign(body), out.length - SIG)
  }
  return out
}

function parseHeader (bytes: Uint8Array, msg: unknown): Envelope {
  let json: unknown
  try { json = JSON.parse(dec.decode(bytes)) } catch { throw new BadRequest('envelope header is not UTF-8 JSON') }
  return checkHeader(json, msg)
}

/** Decodes a frame without checking the signature. Throws `BadRequest` on any malformation. */
export function decodeEnvelope (frame: Uint8Array): DecodedEnvelope {
  const form = frame[0]
  if (form !== FORM_SIGNED && form !== FORM_HOST) throw new BadRequest(`unknown envelope form ${String(form)}`)
  const trailer = form === FORM_SIGNED ? SIG : 0
  if (frame.length < PREFIX + 2 + trailer) throw new BadRequest(`frame of ${frame.length} bytes is too short to be an envelope`)
  const hlen = new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(1)
  if (hlen > MAX_HEADER_BYTES || PREFIX + hlen + trailer > frame.length) throw new BadRequest(`envelope header length ${hlen} does not fit the frame`)
  const headerBytes = frame.subarray(PREFIX, PREFIX + hlen)
  const end = frame.length - trailer
  let msg: unknown
  try { msg = JSON.parse(dec.decode(frame.subarray(PREFIX + hlen, end))) } catch {
    // a broken header says more than a broken payload
    parseHeader(headerBytes, undefined)
    throw new BadRequest('envelope payload is not UTF-8 JSON')
  }
  const d: DecodedEnvelope = { envelope: parseHeader(headerBytes, msg), signed: frame.subarray(0, end) }
  if (trailer > 0) d.signature = frame.subarray(end)
  return d
}

/**
 * Reads the header from the first bytes of a frame (used for oversized frames, whose body was
 * skipped). Returns undefined when the head does not hold a well-formed header.
 */
export function peekHeader (head: Uint8Array): Header | undefined {
  try {
    if (head.length < PREFIX || (head[0] !== FORM_SIGNED && head[0] !== FORM_HOST)) return undefined
    const hlen = new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(1)
    if (hlen > MAX_HEADER_BYTES || PREFIX + hlen > head.length) return undefined
    const { msg: _msg, ...header } = parseHeader(head.subarray(PREFIX, PREFIX + hlen), undefined)
    return header
  } catch { return undefined }
}

/** True when the envelope carries a signature and it verifies with `from.id`. */
export function verifyEnvelope (d: DecodedEnvelope): boolean {
  return d.signature !== undefined && verifyWithDid(d.envelope.from.id, d.signed, d.signature)
}

export function sameHandle (a: Handle, b: Handle): boolean {
  return a.id === b.id && a.addr.peer === b.addr.peer && a.addr.inbox === b.addr.inbox
}
