import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { didFromPeerId, peerIdFromDid, publicKeyFromDid, verifyWithDid } from '../../src/identity/did.js'
import { Keystore } from '../../src/identity/keystore.js'

describe('keystore', () => {
  let dir: string
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'dms-ks-')) })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  it('creates an encrypted key (mode 0600, no secret in clear) and reloads the same identity', async () => {
    const ks = new Keystore(dir)
    const id = await ks.create('dms', 'pw')
    const path = join(dir, 'keys', 'dms.json')
    expect((await stat(path)).mode & 0o777).toBe(0o600)
    const text = await readFile(path, 'utf8')
    expect(text).not.toContain(Buffer.from(id.exportRaw()).toString('base64'))
    expect(text).not.toContain(Buffer.from(id.exportRaw()).toString('hex'))
    const again = await new Keystore(dir).load('dms', 'pw')
    expect(again.did).toBe(id.did)
    expect(again.peerId).toBe(id.peerId)
  })

  it('refuses a wrong passphrase with WrongPassphrase', async () => {
    await new Keystore(dir).create('user', 'right')
    await expect(new Keystore(dir).load('user', 'wrong')).rejects.toMatchObject({ name: 'WrongPassphrase', code: 'WRONG_PASSPHRASE' })
  })

  it('refuses to overwrite a key and names a missing one', async () => {
    const ks = new Keystore(dir)
    await ks.create('user', 'pw')
    await expect(ks.create('user', 'pw')).rejects.toMatchObject({ name: 'KeyExists' })
    await expect(ks.load('nobody', 'pw')).rejects.toMatchObject({ name: 'KeyNotFound' })
    await expect(ks.create('Bad Name', 'pw')).rejects.toMatchObject({ name: 'InvalidArgument' })
  })

  it('lists contexts with their DIDs without a passphrase', async () => {
    const ks = new Keystore(dir)
    const a = await ks.create('dms', 'pw')
    const b = await ks.create('user', 'pw')
    expect(await ks.list()).toEqual([{ context: 'dms', did: a.did }, { context: 'user', did: b.did }])
  })
})

describe('one key: PeerId, did:key and signatures', () => {
  it('converts a DID and a PeerId both ways, and signs verifiably', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dms-ks-'))
    const id = await new Keystore(dir).create('dms', 'pw')
    expect(peerIdFromDid(id.did)).toBe(id.peerId)
    expect(didFromPeerId(id.peerId)).toBe(id.did)
    expect(publicKeyFromDid(id.did)).toEqual(id.publicKey)
    const data = new TextEncoder().encode('hello')
    const sig = id.sign(data)
    expect(verifyWithDid(id.did, data, sig)).toBe(true)
    expect(verifyWithDid(id.did, new TextEncoder().encode('hellO'), sig)).toBe(false)
    await rm(dir, { recursive: true, force: true })
  })

  it('refuses a did:key with another multicodec', () => {
    // 0xe7 0x01 = secp256k1-pub
    expect(() => publicKeyFromDid('did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme')).toThrow(expect.objectContaining({ name: 'InvalidArgument' }))
  })
})
