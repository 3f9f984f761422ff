import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { base58btc } from 'multiformats/bases/base58'
import { newIdentity, type Identity } from '../../src/identity/identity.js'
import { createAuthorizer, type AuthorizeRequest, type CachingAuthorizer } from '../../src/security/authorizer.js'
import { emptyAnchors, type Anchors } from '../../src/security/anchors.js'
import { RevocationStore, type RevocationStoreInit } from '../../src/security/revocations.js'
import { buildIndex, type TrustIndex } from '../../src/security/trust.js'
import { issueToken, type TokenInit } from '../../src/security/ucan.js'

export const NOW = Date.UTC(2030, 0, 1) // fixed clock: tests never depend on the wall clock
export const NOW_S = NOW / 1000
export const HOUR = 3600

export async function identities (n: number): Promise<Identity[]> {
  return await Promise.all(Array.from({ length: n }, async () => await newIdentity()))
}

/** A token from `issuer` with sane defaults (one hour from NOW). */
export async function tok (issuer: Identity, audience: Identity | string, init: Partial<TokenInit> = {}): Promise<string> {
  return await issueToken(issuer, { audience: typeof audience === 'string' ? audience : audience.did, caps: ['/dms'], exp: NOW_S + HOUR, ...init })
}

const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url')

/** Signs arbitrary header/payload JSON with `signer`: tokens the builder would refuse to make. */
export function forge (signer: Identity, header: unknown, payload: unknown): string {
  const signed = `${b64(header)}.${b64(payload)}`
  return `${signed}.${Buffer.from(signer.sign(new TextEncoder().encode(signed))).toString('base64url')}`
}

export const HEADER = { alg: 'EdDSA', typ: 'JWT', ucv: '0.8.1' }

export function decodePart (jwt: string, i: 0 | 1): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[i], 'base64url').toString('utf8')) as Record<string, unknown>
}

/** Re-encodes the payload of `jwt` after `edit`, keeping the original signature (tampering). */
export function tamper (jwt: string, edit: (p: Record<string, unknown>) => void): string {
  const [h, , s] = jwt.split('.')
  const p = decodePart(jwt, 1)
  edit(p)
  return `${h}.${b64(p)}.${s}`
}

/** A did:key with another multicodec (secp256k1-pub 0xe7 0x01) over 33 bytes. */
export function secp256k1Did (): string {
  const bytes = new Uint8Array(35)
  bytes.set([0xe7, 0x01, 0x02], 0)
  for (let i = 3; i < bytes.length; i++) bytes[i] = i
  return `did:key:${base58btc.encode(bytes)}`
}

/** An authorizer over in-memory anchors (the same components the daemon wires). */
export interface TestAuthz {
  authorizer: CachingAuthorizer
  revocations: RevocationStore
  index: () => TrustIndex
  setAnchors: (a: Partial<Anchors>) => Promise<void>
  ask: (req: Partial<AuthorizeRequest> & Pick<AuthorizeRequest, 'invoker'>) => Promise<void>
}

export async function testAuthz (node: Identity, anchors: Partial<Anchors> = {}, opts: { cacheMax?: number, revocations?: RevocationStoreInit } = {}): Promise<TestAuthz> {
  let idx = await buildIndex({ ...emptyAnchors(), ...anchors }, { selfDid: node.did })
  const revocations = new RevocationStore(opts.revocations)
  const authorizer = createAuthorizer({ trust: () => idx, isRevoked: (id, iss) => revocations.has(id, iss), selfDid: node.did, cacheMax: opts.cacheMax })
  revocations.setPolicy({ knowsIssuer: authorizer.knowsIssuer, expiryOf: authorizer.expiryOf })
  revocations.onAdded(authorizer.revoked)
  return {
    authorizer,
    revocations,
    index: () => idx,
    setAnchors: async (a) => {
      idx = await buildIndex({ ...emptyAnchors(), ...a }, { selfDid: node.did })
      authorizer.invalidate()
    },
    ask: async (req) => {
      await authorizer.authorize({ audience: node.did, capability: '/dms/node/peers/list', proofs: [], now: NOW, ...req })
    }
  }
}

export async function tempDir (): Promise<{ dir: string, cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'dms-caps-'))
  return { dir, cleanup: async () => { await rm(dir, { recursive: true, force: true }) } }
}

/** Asserts a promise rejects with a dms error of `name` whose `reason` is `reason`. */
export async function refusal (p: Promise<unknown>): Promise<{ name: string, reason: unknown, code: string }> {
  try {
    await p
  } catch (err) {
    const e = err as { name: string, code: string, fields?: { reason?: unknown } }
    return { name: e.name, reason: e.fields?.reason, code: e.code }
  }
  throw new Error('expected a refusal, but it was accepted')
}
