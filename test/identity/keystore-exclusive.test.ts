import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { Keystore } from '../../src/identity/keystore.js'
import { isDmsError } from '../../src/lib/errors.js'

/** Issue 12, items 14 and 15 at the keystore: exclusive creation, one passphrase per data dir. */
describe('keystore: one key per context, one passphrase per data dir', () => {
  let dir: string
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'dms-ksx-')) })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  it('of concurrent creators of one context, exactly one wins; the others get KeyExists, never a replaced key', async () => {
    const results = await Promise.allSettled(Array.from({ length: 5 }, async () => await new Keystore(dir).create('user', 'pw')))
    const won = results.flatMap(r => r.status === 'fulfilled' ? [r.value] : [])
    expect(won).toHaveLength(1)
    for (const r of results) if (r.status === 'rejected') expect(isDmsError(r.reason, 'KeyExists')).toBe(true)
    expect(await new Keystore(dir).did('user')).toBe(won[0].did)
    expect((await new Keystore(dir).load('user', 'pw')).did).toBe(won[0].did)
    expect(await readdir(join(dir, 'keys'))).toEqual(['user.json'])
  })

  it('loadOrCreate at once from several callers gives every caller the same key', async () => {
    const ids = await Promise.all(Array.from({ length: 4 }, async () => await new Keystore(dir).loadOrCreate('dms', 'pw')))
    expect(new Set(ids.map(i => i.did)).size).toBe(1)
  })

  it('refuses to seal a new key with a passphrase that does not open the keys already there', async () => {
    const ks = new Keystore(dir)
    await ks.create('dms', 'right')
    await expect(ks.create('ops', 'wrong')).rejects.toMatchObject({ name: 'WrongPassphrase', code: 'WRONG_PASSPHRASE' })
    expect(await ks.exists('ops')).toBe(false)
    await expect(ks.checkPassphrase('wrong')).rejects.toMatchObject({ name: 'WrongPassphrase' })
    await ks.checkPassphrase('right')
    expect((await ks.create('ops', 'right')).did).toBe(await ks.did('ops'))
    // an empty data dir has no passphrase yet: any is the first
    await new Keystore(join(dir, 'other')).checkPassphrase('anything')
  })
})
