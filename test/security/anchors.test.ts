import { readFile, stat, writeFile } from 'node:fs/promises'
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { Identity } from '../../src/identity/identity.js'
import {
  addAnchor, addRoot, anchorsPath, mutateAnchors, newContext, readAnchors, removeAnchor, writeAnchors, emptyAnchors
} from '../../src/security/anchors.js'
import { ContextTrust } from '../../src/security/trust.js'
import { tokenId } from '../../src/security/ucan.js'
import { identities, refusal, tempDir, tok } from './helpers.js'

const FUTURE_S = Math.floor(Date.now() / 1000) + 3600 // anchors are validated against the wall clock

describe('anchors file', () => {
  let a: Identity, b: Identity, node: Identity
  let dir: string, cleanup: () => Promise<void>
  beforeAll(async () => { [a, b, node] = await identities(3) })
  beforeEach(async () => { ({ dir, cleanup } = await tempDir()) })
  afterEach(async () => { await cleanup() })

  it('is empty until written, then persisted with mode 0600 in caps/<context>.json', async () => {
    expect(await readAnchors(dir, 'user')).toEqual(emptyAnchors())
    await addRoot(dir, 'dms', a.did)
    await addRoot(dir, 'dms', a.did) // idempotent
    const path = anchorsPath(dir, 'dms')
    expect(path.endsWith('caps/dms.json')).toBe(true)
    expect((await stat(path)).mode & 0o777).toBe(0o600)
    expect(JSON.parse(await readFile(path, 'utf8'))).toEqual({ version: 1, context: 'dms', roots: [a.did], require: [], provide: [], revoke: [] })
  })

  it('validates what it stores', async () => {
    expect(await refusal(addAnchor(dir, 'user', 'root', 'did:key:nope'))).toMatchObject({ name: 'InvalidArgument' })
    expect(await refusal(addAnchor(dir, 'user', 'provide', 'not-a-token'))).toMatchObject({ name: 'InvalidToken', reason: 'malformed' })
    expect(await refusal(addAnchor(dir, 'user', 'provide', await tok(a, b, { exp: 1_000 })))).toMatchObject({ name: 'InvalidToken', reason: 'expired' })
    expect(await refusal(addAnchor(dir, 'User!', 'root', a.did))).toMatchObject({ name: 'InvalidArgument' })
    await newContext(dir, 'y')
    await writeFile(anchorsPath(dir, 'y'), '{"version":1}')
    expect(await refusal(readAnchors(dir, 'y'))).toMatchObject({ name: 'InvalidConfig' })
  })

  it('removes by value or by token id, and says so when absent', async () => {
    const t = await tok(a, b, { exp: FUTURE_S })
    await addAnchor(dir, 'user', 'provide', t)
    await addAnchor(dir, 'user', 'require', t)
    expect((await removeAnchor(dir, 'user', 'provide', tokenId(t))).provide).toEqual([])
    expect((await removeAnchor(dir, 'user', 'require', t)).require).toEqual([])
    expect(await refusal(removeAnchor(dir, 'user', 'root', a.did))).toMatchObject({ name: 'NotFound' })
  })

  it('serializes concurrent read-modify-writes', async () => {
    const dids = (await identities(20)).map(i => i.did)
    await Promise.all(dids.map(async d => await mutateAnchors(dir, 'dms', x => ({ ...x, roots: [...x.roots, d] }))))
    expect((await readAnchors(dir, 'dms')).roots.sort()).toEqual([...dids].sort())
  })

  it('`cap new` refuses an existing context', async () => {
    await newContext(dir, 'org')
    expect(await refusal(newContext(dir, 'org'))).toMatchObject({ name: 'Conflict' })
  })

  it('a running context sees mutations at once and edits by other processes through the watcher', async () => {
    const trust = new ContextTrust({ dataDir: dir, context: 'dms', selfDid: node.did })
    await trust.reload()
    await trust.watch()
    try {
      expect([...trust.index.roots]).toEqual([node.did])
      await trust.mutate(x => ({ ...x, roots: [a.did] }))
      expect(trust.index.roots.has(a.did)).toBe(true)
      // Another process (the CLI) rewrites the file: the change event is awaited, with a deadline.
      const changed = new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => { reject(new Error('no reload within 5 s')) }, 5_000)
        const off = trust.onChange(() => { if (trust.index.roots.has(b.did)) { clearTimeout(t); off(); resolve() } })
      })
      await writeAnchors(dir, 'dms', { ...emptyAnchors(), roots: [b.did] })
      await changed
      expect(trust.index.roots.has(a.did)).toBe(false)
      expect(trust.index.roots.has(node.did)).toBe(true)
    } finally {
      trust.close()
    }
  })

  it('keeps the last good anchors when the file is broken by hand', async () => {
    await addRoot(dir, 'dms', a.did)
    const trust = new ContextTrust({ dataDir: dir, context: 'dms' })
    await trust.reload()
    await writeFile(anchorsPath(dir, 'dms'), '{ broken')
    await trust.reload()
    expect(trust.index.roots.has(a.did)).toBe(true)
  })
})
