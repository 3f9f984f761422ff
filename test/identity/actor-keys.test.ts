import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { ActorKeys } from '../../src/identity/actor-keys.js'
import { newIdentity } from '../../src/identity/identity.js'
import { openDb, type Db } from '../../src/store/db.js'

describe('child actor keys', () => {
  let dir: string | undefined
  let db: Db | undefined
  afterEach(async () => { await db?.close(); if (dir !== undefined) await rm(dir, { recursive: true, force: true }) })

  it('are created once, reloaded the same, sealed at rest, and open only with the node\'s key', async () => {
    dir = await mkdtemp(join(tmpdir(), 'dms-actor-keys-'))
    db = await openDb(join(dir, 'db'))
    const node = await newIdentity()
    const keys = new ActorKeys(db, node)
    const a = await keys.loadOrCreate('alloc-1')
    expect((await keys.loadOrCreate('alloc-1')).did).toBe(a.did)
    expect((await new ActorKeys(db, node).load('alloc-1'))?.did).toBe(a.did)
    // what is on disk holds neither the raw key nor its base64
    await db.close(); db = undefined
    const raw = Buffer.from(a.exportRaw())
    for (const f of await readdir(join(dir, 'db'))) {
      const bytes = await readFile(join(dir, 'db', f))
      expect(bytes.includes(raw.subarray(0, 32))).toBe(false)
      expect(bytes.includes(Buffer.from(raw.toString('base64').slice(0, 40)))).toBe(false)
    }
    db = await openDb(join(dir, 'db'))
    await expect(new ActorKeys(db, await newIdentity()).load('alloc-1')).rejects.toMatchObject({ name: 'InvalidState' })
    await new ActorKeys(db, node).remove('alloc-1')
    expect(await new ActorKeys(db, node).load('alloc-1')).toBeUndefined()
  })
})
