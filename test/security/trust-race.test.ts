import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Identity } from '../../src/identity/identity.js'
import { emptyAnchors, readAnchors, withAnchor, writeAnchors, type Anchors } from '../../src/security/anchors.js'
import { ContextTrust } from '../../src/security/trust.js'
import { identities, tempDir } from './helpers.js'

/**
 * Issue 12, item 13: a reload of the anchors (the watcher's, on a file change) that read the file
 * before a change and finishes after it must not put the old anchors back. The read is the real
 * one; the test holds its result until the change has been made, which is the interleaving a slow
 * index build (token verification) produces on a busy machine.
 */
describe('anchors: reloads and changes are ordered', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let node: Identity, alice: Identity, bob: Identity
  /** The next read, when armed: it signals `held` once it has read the file, then waits for `release`. */
  let armed: { held: () => void, released: Promise<void> } | undefined
  let release: (() => void) | undefined

  /** Holds the next read's result until `release()`; the promise resolves once that read has read the file. */
  const arm = (): Promise<void> => new Promise<void>(resolve => {
    const released = new Promise<void>(r => { release = r })
    armed = { held: resolve, released }
  })
  const read = async (d: string, c: string): Promise<Anchors> => {
    const a = await readAnchors(d, c)
    const gate = armed
    armed = undefined
    if (gate !== undefined) { gate.held(); await gate.released }
    return a
  }

  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir())
    ;[node, alice, bob] = await identities(3)
    await writeAnchors(dir, 'dms', emptyAnchors())
  })
  afterEach(async () => { release?.(); armed = undefined; await cleanup() })

  it('a reload that read before a change and finishes after it is dropped, not applied', async () => {
    const trust = new ContextTrust({ dataDir: dir, context: 'dms', selfDid: node.did, read })
    await trust.reload()
    const held = arm()
    const reload = trust.reload()
    await held // the reload has read the file (no alice yet) and waits before applying it
    await trust.mutate(a => withAnchor(a, 'root', alice.did))
    expect(trust.anchors.roots).toEqual([alice.did])
    // From here on, nothing may show the anchors without alice.
    const seen: boolean[] = []
    const off = trust.onChange(() => { seen.push(trust.index.roots.has(alice.did) && trust.anchors.roots.includes(alice.did)) })
    release?.()
    await reload
    off()
    expect(trust.anchors.roots).toEqual([alice.did])
    expect(trust.index.roots.has(alice.did)).toBe(true)
    expect(seen.every(Boolean)).toBe(true)
  })

  it('a reload that read after a change carries it, and later edits by other processes still win', async () => {
    const trust = new ContextTrust({ dataDir: dir, context: 'dms', selfDid: node.did, read })
    await trust.reload()
    await trust.mutate(a => withAnchor(a, 'root', alice.did))
    // another process (the CLI) replaces the file; the reload that reads it puts it in force
    await writeAnchors(dir, 'dms', { ...emptyAnchors(), roots: [bob.did] })
    await trust.reload()
    expect(trust.anchors.roots).toEqual([bob.did])
    expect(trust.index.roots.has(alice.did)).toBe(false)
    // and a change after that is in force when mutate resolves, with the other process's edit kept
    await trust.mutate(a => withAnchor(a, 'root', alice.did))
    expect(trust.anchors.roots).toEqual([bob.did, alice.did])
  })
})
