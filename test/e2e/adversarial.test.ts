import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encodeEnvelope, newNonce } from '../../src/actor/envelope.js'
import type { Handle } from '../../src/actor/types.js'
import { ApiClient } from '../../src/api/client.js'
import { buildEnvelope, parseDest, type Session } from '../../src/cli/call.js'
import { peerIdFromDid } from '../../src/identity/did.js'
import { newIdentity, type Identity } from '../../src/identity/identity.js'
import { Keystore } from '../../src/identity/keystore.js'
import type { WireError } from '../../src/lib/errors.js'
import { issueToken, type TokenInit } from '../../src/security/ucan.js'
import { HEADER, decodePart, forge, secp256k1Did, tamper } from '../security/helpers.js'
import { PASSPHRASE, cleanup, startDaemon, type Daemon } from './harness.js'

/**
 * The adversarial list of issue #3 through a running daemon: each bad token, built here with the
 * project's own token code and keys from the data dir's keystore, is sent with
 * `dms actor invoke --envelope '{"be":…,"to":…,"cap":[…]}'` (which signs the envelope with the
 * context key and attaches exactly those tokens). Each is refused with `Unauthorized` (stderr,
 * exit 1), its `reason` is read from the wire reply of the same call made in-process (`ask`), and
 * the daemon then still serves a valid call.
 *
 * The authorizer-level twin of this list is test/security/adversarial.test.ts. Envelope-level
 * cases at a receiving node — a replayed envelope, an envelope claiming another host than the
 * connection it came on — are the actor contract suite's (test/actor/system-contract.ts, run over
 * libp2p by test/actor/system.int.test.ts); here they are shown at the daemon's local API.
 */

const LIST = '/dms/node/peers/list'
const HOUR_S = 3600

interface Reply { ok?: any, error?: WireError & { reason?: string } }

describe('adversarial tokens through a running daemon', () => {
  let d: Daemon
  /** The data dir's user, a root of the node; the others are contexts of the same data dir. */
  let root: Identity, alice: Identity, bob: Identity, carol: Identity, mallory: Identity
  let valid: string
  const nowS = (): number => Math.floor(Date.now() / 1000)
  const tok = async (issuer: Identity, audience: Identity, init: Partial<TokenInit> = {}): Promise<string> =>
    await issueToken(issuer, { audience: audience.did, caps: ['/dms/node'], exp: nowS() + HOUR_S, ...init })

  beforeAll(async () => {
    d = await startDaemon()
    const ks = new Keystore(d.dataDir)
    root = await ks.load('user', PASSPHRASE)
    ;[alice, bob, carol, mallory] = await Promise.all(['alice', 'bob', 'carol', 'mallory'].map(async c => await ks.create(c, PASSPHRASE)))
    valid = await tok(root, alice)
  })
  afterAll(async () => { await cleanup([d]) })

  const ctx = (who: Identity): string => ({ [alice.did]: 'alice', [bob.did]: 'bob', [carol.did]: 'carol', [mallory.did]: 'mallory' })[who.did]

  const session = (who: Identity): Session => ({ daemon: d.info, api: new ApiClient(d.info.api), identity: who })

  /** The envelope `dms actor invoke --context <who>` builds, posted to the same API; the wire reply. */
  async function ask (who: Identity, cap: string[], be = LIST): Promise<Reply> {
    const s = session(who)
    const { frame } = await buildEnvelope({ dataDir: d.dataDir, context: ctx(who), timeoutMs: 10_000 }, s, parseDest(d.info.did), be, {}, { cont: true, cap })
    return (await s.api.invoke(frame, 10_000)).reply as Reply
  }

  async function refused (who: Identity, cap: string[], reason: string): Promise<void> {
    const r = await d.cli(['actor', 'invoke', '--context', ctx(who), '--envelope', JSON.stringify({ be: LIST, to: d.info.peerId, cap })])
    expect(r.stderr).toMatch(/^Unauthorized: /)
    expect(r.code).toBe(1)
    expect((await ask(who, cap)).error).toMatchObject({ name: 'Unauthorized', code: 'UNAUTHORIZED', reason })
    // …and the daemon still serves an honest caller.
    expect((await ask(alice, [valid])).ok).toHaveProperty('peers')
  }

  it('serves the valid chain the cases are compared against, through the CLI', async () => {
    const r = await d.cliJson(['actor', 'invoke', '--context', 'alice', '--envelope', JSON.stringify({ be: LIST, to: d.info.peerId, cap: [valid] })])
    expect(r.reply).toHaveProperty('peers')
  })

  it('tampered signature', async () => {
    const [h, p, s] = valid.split('.')
    await refused(alice, [`${h}.${p}.${s.slice(0, 20)}${s[20] === 'A' ? 'B' : 'A'}${s.slice(21)}`], 'bad-signature')
  })

  it('changed audience (subject rewritten to the thief, signature kept)', async () => {
    await refused(mallory, [tamper(valid, p => { p.aud = mallory.did })], 'bad-signature')
  })

  it('a token issued to someone else, presented unchanged', async () => {
    await refused(mallory, [valid], 'wrong-subject')
  })

  it('widened capability', async () => {
    const parent = await tok(root, alice, { caps: ['/dms/node/peers/self'] })
    await refused(bob, [await tok(alice, bob, { caps: ['/dms/node'], proof: parent })], 'widened')
  })

  it('widened topic', async () => {
    const parent = await tok(root, alice, { topics: ['/nunet/hello'] })
    await refused(bob, [await tok(alice, bob, { topics: ['/nunet'], proof: parent })], 'widened')
  })

  it('child outliving its parent', async () => {
    const parent = await tok(root, alice, { exp: nowS() + HOUR_S })
    await refused(bob, [await tok(alice, bob, { exp: nowS() + 2 * HOUR_S, proof: parent })], 'widened')
  })

  it('expired link (the whole chain is refused)', async () => {
    const parent = await tok(root, alice, { exp: nowS() - 60 })
    await refused(bob, [await tok(alice, bob, { exp: nowS() - 60, proof: parent })], 'expired')
  })

  it('tampered link in the middle of a chain (re-signed below by its holder)', async () => {
    const ab = await tok(root, alice, { caps: ['/dms/node/peers/self'] })
    const bc = await tok(alice, bob, { caps: ['/dms/node/peers/self'], proof: ab })
    const widened = tamper(bc, p => { p.att = [{ with: 'dms:/', can: 'dms/invoke' }] })
    await refused(carol, [await tok(bob, carol, { caps: ['/'], proof: widened })], 'bad-signature')
  })

  it('chain not anchored on a trusted root', async () => {
    const foreign = await tok(mallory, alice, { caps: ['/'] })
    await refused(bob, [await tok(alice, bob, { proof: foreign })], 'not-anchored')
  })

  it('token from a revoked issuer (the grant that made Bob an issuer is revoked with `dms cap revoke`)', async () => {
    const toBob = await tok(root, bob, { caps: ['/dms'] })
    const fromBob = await tok(bob, carol, { proof: toBob })
    expect((await ask(carol, [fromBob])).ok).toHaveProperty('peers')
    const r = await d.cliJson(['cap', 'revoke', toBob])
    expect(r).toMatchObject({ fresh: true })
    await refused(carol, [fromBob], 'revoked')
  })

  it('oversized token blob', async () => {
    const huge = forge(root, HEADER, { iss: root.did, aud: alice.did, exp: nowS() + HOUR_S, att: [], fct: [{ pad: 'x'.repeat(40_000) }], prf: [] })
    await refused(alice, [huge], 'too-large')
  })

  it('malformed JWT', async () => {
    await refused(alice, ['not-a-jwt'], 'malformed')
    await refused(alice, [`${valid.split('.')[0]}.e30.${valid.split('.')[2]}`], 'malformed')
  })

  it('unknown algorithm', async () => {
    await refused(alice, [forge(root, { ...HEADER, alg: 'ES256' }, decodePart(valid, 1))], 'unknown-alg')
  })

  it('did:key with a wrong multicodec', async () => {
    await refused(alice, [forge(root, HEADER, { ...decodePart(valid, 1), iss: secp256k1Did() })], 'bad-did')
  })

  it('a token whose audience is another node', async () => {
    const elsewhere = (await newIdentity()).did
    await refused(alice, [await tok(root, alice, { node: elsewhere })], 'wrong-audience')
    // restricted to this node, it is served
    expect((await ask(alice, [await tok(root, alice, { node: d.info.did })])).ok).toHaveProperty('peers')
  })

  it('envelope level at the local API: replayed, claiming another host, tampered, unsigned (receivers: the actor contract suite)', async () => {
    const s = session(alice)
    const g = { dataDir: d.dataDir, context: 'alice', timeoutMs: 10_000 }
    const to: Handle = parseDest(d.info.did)
    const { frame } = await buildEnvelope(g, s, to, LIST, {}, { cont: true, cap: [valid] })
    expect((await s.api.invoke(frame, 10_000)).reply).toHaveProperty('ok')
    expect((await s.api.invoke(frame, 10_000)).reply).toMatchObject({ error: { name: 'Replayed' } })

    // The API relays only envelopes whose replies come back to this node.
    const elsewhere = peerIdFromDid((await newIdentity()).did)
    const claim = await buildEnvelope(g, { ...s, daemon: { ...d.info, peerId: elsewhere } }, to, LIST, {}, { cont: true, cap: [valid] })
    await expect(s.api.invoke(claim.frame, 10_000)).rejects.toMatchObject({ name: 'BadRequest' })

    const tampered = new Uint8Array((await buildEnvelope(g, s, to, LIST, {}, { cont: true, cap: [valid] })).frame)
    tampered[tampered.length - 10] ^= 0x01 // inside the envelope's Ed25519 signature
    await expect(s.api.invoke(tampered, 10_000)).rejects.toMatchObject({ name: 'Unauthorized', fields: { reason: 'bad-signature' } })

    // An unsigned (host-authenticated) envelope in the node's own name would borrow the node's
    // authority, a root of itself: the API relays only signed envelopes.
    const nonce = newNonce()
    const unsigned = encodeEnvelope({ v: 1, to, from: to, be: LIST, nonce, exp: Date.now() + 10_000, cont: `/dms/reply/${nonce}`, msg: {} })
    await expect(s.api.invoke(unsigned, 10_000)).rejects.toMatchObject({ name: 'Unauthorized', fields: { reason: 'unsigned' } })

    expect((await ask(alice, [valid])).ok).toHaveProperty('peers')
    expect((await d.cliJson(['actor', 'cmd', '/public/status'])).status).toBe('running')
  })
})
