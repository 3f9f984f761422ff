import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { capBehaviors } from '../../../behaviors/cap/index.js'
import type { AnyBehavior } from '../../../src/actor/behavior.js'
import { LocalHub } from '../../../src/actor/local-transport.js'
import { ActorSystem } from '../../../src/actor/system.js'
import { newIdentity, type Identity } from '../../../src/identity/identity.js'
import { addRoot } from '../../../src/security/anchors.js'
import { createCapabilities, type Capabilities } from '../../../src/security/index.js'
import { createRevocation } from '../../../src/security/revocations.js'
import type { AnchorsView } from '../../../src/security/service.js'
import { issueToken, tokenId } from '../../../src/security/ucan.js'
import { openDb, type Db } from '../../../src/store/db.js'
import { refusal, tempDir } from '../../security/helpers.js'

/**
 * The capability behaviours through the real actor system (in-process transport), real level
 * databases and real anchors files: two nodes, an owner who is a root of both, and Alice who
 * holds a token from the owner.
 */
interface TestNode { id: Identity, caps: Capabilities, system: ActorSystem, db: Db, dir: string, cleanup: () => Promise<void> }

const TIMEOUT = { timeout: 5_000 }
const hour = (): number => Math.floor(Date.now() / 1000) + 3600

describe('capability behaviours', () => {
  const hub = new LocalHub()
  let owner: Identity, alice: Identity, stranger: Identity
  let a: TestNode, b: TestNode
  let ownerSys: ActorSystem, aliceSys: ActorSystem, strangerSys: ActorSystem

  async function startNode (roots: string[]): Promise<TestNode> {
    const id = await newIdentity()
    const { dir, cleanup } = await tempDir()
    for (const r of roots) await addRoot(dir, 'dms', r)
    const db = await openDb(`${dir}/db`)
    const caps = await createCapabilities({ dataDir: dir, context: 'dms', selfDid: id.did, db })
    await caps.start()
    const system = new ActorSystem({
      identity: id,
      transport: hub.transport(id.peerId),
      authorizer: caps.authorizer,
      proofs: caps.proofs,
      behaviors: capBehaviors as readonly AnyBehavior[],
      services: { caps: caps.service }
    })
    caps.attach(system.root)
    return { id, caps, system, db, dir, cleanup }
  }

  function client (id: Identity): ActorSystem {
    return new ActorSystem({ identity: id, transport: hub.transport(id.peerId), authorizer: { authorize: async () => {} }, behaviors: [], services: {} })
  }

  beforeAll(async () => {
    [owner, alice, stranger] = await Promise.all([newIdentity(), newIdentity(), newIdentity()])
    a = await startNode([owner.did])
    b = await startNode([owner.did])
    ownerSys = client(owner)
    aliceSys = client(alice)
    strangerSys = client(stranger)
  })

  afterAll(async () => {
    for (const n of [a, b]) {
      n.system.stop()
      await n.caps.stop()
      await n.db.close()
      await n.cleanup()
    }
  })

  it('/dms/cap/list shows the node\'s anchors to a root, and refuses a stranger with a typed error', async () => {
    const view = await ownerSys.root.invoke<AnchorsView>(a.id.did, '/dms/cap/list', {}, TIMEOUT)
    expect(view).toMatchObject({ context: 'dms', did: a.id.did, roots: [owner.did], require: [], provide: [], revoked: [] })
    expect(await refusal(strangerSys.root.invoke(a.id.did, '/dms/cap/list', {}, TIMEOUT))).toMatchObject({ name: 'Unauthorized', reason: 'no-proof' })
  })

  it('/dms/cap/anchor adds and removes anchors, in force before the reply', async () => {
    const forAlice = await issueToken(owner, { audience: a.id.did, caps: ['/dms/node'], exp: hour() })
    let view = await ownerSys.root.invoke<AnchorsView>(a.id.did, '/dms/cap/anchor', { op: 'add', kind: 'provide', value: forAlice }, TIMEOUT)
    expect(view.provide).toEqual([expect.objectContaining({ id: tokenId(forAlice), issuer: owner.did, subject: a.id.did, capabilities: ['/dms/node'], topics: [] })])
    view = await ownerSys.root.invoke<AnchorsView>(a.id.did, '/dms/cap/anchor', { op: 'add', kind: 'root', value: stranger.did }, TIMEOUT)
    expect(view.roots).toContain(stranger.did)
    await strangerSys.root.invoke(a.id.did, '/dms/cap/list', {}, TIMEOUT) // a root now
    await ownerSys.root.invoke(a.id.did, '/dms/cap/anchor', { op: 'remove', kind: 'root', value: stranger.did }, TIMEOUT)
    expect(await refusal(strangerSys.root.invoke(a.id.did, '/dms/cap/list', {}, TIMEOUT))).toMatchObject({ reason: 'no-proof' })
    expect(await refusal(ownerSys.root.invoke(a.id.did, '/dms/cap/anchor', { op: 'remove', kind: 'root', value: stranger.did }, TIMEOUT))).toMatchObject({ name: 'NotFound' })
    expect(await refusal(ownerSys.root.invoke(a.id.did, '/dms/cap/anchor', { op: 'add', kind: 'provide', value: 'junk' }, TIMEOUT))).toMatchObject({ name: 'InvalidToken', reason: 'malformed' })
  })

  it('a delegated capability works on both nodes until its issuer revokes it; the revocation spreads over gossip', async () => {
    const grant = await issueToken(owner, { audience: alice.did, caps: ['/dms/cap/list'], exp: hour() })
    await aliceSys.root.invoke(a.id.did, '/dms/cap/list', {}, { ...TIMEOUT, cap: [grant] })
    await aliceSys.root.invoke(b.id.did, '/dms/cap/list', {}, { ...TIMEOUT, cap: [grant] })
    expect(await refusal(aliceSys.root.invoke(a.id.did, '/dms/cap/anchor', { op: 'add', kind: 'root', value: alice.did }, { ...TIMEOUT, cap: [grant] }))).toMatchObject({ reason: 'not-covered' })

    // Only the issuer may sign the revocation.
    expect(() => createRevocation(alice, grant)).toThrow(expect.objectContaining({ fields: expect.objectContaining({ reason: 'not-issuer' }) }))
    const heardOnB = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error('node B heard no revocation within 5 s')) }, 5_000)
      const off = b.caps.onChange(() => { clearTimeout(timer); off(); resolve() })
    })
    const result = await ownerSys.root.invoke(a.id.did, '/dms/cap/revoke', { record: createRevocation(owner, grant) }, TIMEOUT)
    expect(result).toEqual({ id: tokenId(grant), fresh: true, spread: true })
    await heardOnB

    for (const n of [a, b]) {
      expect(await refusal(aliceSys.root.invoke(n.id.did, '/dms/cap/list', {}, { ...TIMEOUT, cap: [grant] }))).toMatchObject({ name: 'Unauthorized', reason: 'revoked' })
    }
    const view = await ownerSys.root.invoke<AnchorsView>(a.id.did, '/dms/cap/list', {}, TIMEOUT)
    expect(view.revoked.map(t => t.id)).toEqual([tokenId(grant)])
    expect(view.revocations).toBe(1)
  })

  it('/dms/cap/revoke refuses a record not signed by the token\'s issuer', async () => {
    const grant = await issueToken(owner, { audience: alice.did, caps: ['/dms'], exp: hour() })
    const record = createRevocation(owner, grant)
    // alice claims to be the issuer of a record owner signed: her signature check fails
    const forged = { ...record, iss: alice.did }
    expect(await refusal(aliceSys.root.invoke(a.id.did, '/dms/cap/revoke', { record: forged }, TIMEOUT))).toMatchObject({ name: 'InvalidToken', reason: 'bad-signature' })
    // and only the issuer named in the record may hand it in
    expect(await refusal(ownerSys.root.invoke(a.id.did, '/dms/cap/revoke', { record: forged }, TIMEOUT))).toMatchObject({ name: 'Unauthorized', reason: 'not-issuer' })
    expect(await refusal(strangerSys.root.invoke(a.id.did, '/dms/cap/revoke', { record }, TIMEOUT))).toMatchObject({ name: 'Unauthorized', reason: 'not-issuer' })
  })

  it('revocations survive a restart of the node (level)', async () => {
    const grant = await issueToken(owner, { audience: alice.did, caps: ['/dms'], exp: hour() })
    await b.caps.service.receiveRevocation(createRevocation(owner, grant))
    const again = await createCapabilities({ dataDir: b.dir, context: 'dms', selfDid: b.id.did, db: b.db })
    await again.start()
    try {
      expect(await refusal(again.authorizer.authorize({ invoker: alice.did, audience: b.id.did, capability: '/dms/x', proofs: [grant], now: Date.now() }))).toMatchObject({ reason: 'revoked' })
    } finally {
      await again.stop()
    }
  })
})
