import { watch, type FSWatcher } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { basename } from 'node:path'
import type { Logger } from 'pino'
import { silentLogger } from '../lib/log.js'
import { anchorsPath, capsDir, emptyAnchors, mutateAnchors, readAnchors, type Anchors } from './anchors.js'
import { verifyChain, type VerifiedChain } from './chain.js'
import { decodeToken, tokenId } from './ucan.js'

/**
 * The anchors of a context in the form the authorizer reads on every invocation: sets and maps
 * built once per change, never per call.
 */
export interface TrustIndex {
  /** Root DIDs; for the daemon's context this includes the node's own DID. */
  readonly roots: ReadonlySet<string>
  /** Require anchors with a valid chain, by the foreign DID they admit (the token's subject). */
  readonly require: ReadonlyMap<string, readonly VerifiedChain[]>
  /** Provide anchors with a valid chain. */
  readonly provide: readonly VerifiedChain[]
  /** Ids (CIDs) of the tokens this context refuses (revoke anchors). */
  readonly revokedIds: ReadonlySet<string>
}

export interface IndexOptions {
  /** Trusted on itself without being listed (the node's DID for the `dms` context). */
  selfDid?: string
  log?: Logger
}

/**
 * Builds the index. A require anchor counts only when some link of its chain was issued by a
 * root: "a require token from a root of ours". Unusable entries (a hand-edited file) are logged
 * and skipped rather than failing the whole context.
 */
export async function buildIndex (anchors: Anchors, opts: IndexOptions = {}): Promise<TrustIndex> {
  const log = opts.log ?? silentLogger()
  const roots = new Set(anchors.roots)
  if (opts.selfDid !== undefined) roots.add(opts.selfDid)
  const revokedIds = new Set<string>()
  for (const jwt of anchors.revoke) {
    try { decodeToken(jwt); revokedIds.add(tokenId(jwt)) } catch (err) { log.warn({ err }, 'skipping a malformed revoke anchor') }
  }
  const chains = async (list: string[], kind: string): Promise<VerifiedChain[]> => {
    const out: VerifiedChain[] = []
    for (const jwt of list) {
      try { out.push(await verifyChain(jwt)) } catch (err) { log.warn({ err, kind }, 'skipping an invalid anchor token') }
    }
    return out
  }
  const require = new Map<string, VerifiedChain[]>()
  for (const c of await chains(anchors.require, 'require')) {
    if (!c.links.some(l => roots.has(l.payload.iss))) {
      log.warn({ issuer: c.links[c.links.length - 1].payload.iss }, 'a require anchor issued by no root of this context is ignored')
      continue
    }
    const subject = c.links[0].payload.aud
    require.set(subject, [...(require.get(subject) ?? []), c])
  }
  return { roots, require, provide: await chains(anchors.provide, 'provide'), revokedIds }
}

export interface ContextTrustInit {
  dataDir: string
  context: string
  selfDid?: string
  log?: Logger
  /** Reads the context's file (default `readAnchors`); tests hold a read to order it against a change. */
  read?: (dataDir: string, context: string) => Promise<Anchors>
}

/**
 * The live anchors of one context for a running daemon. Mutations through `mutate` take effect
 * before it resolves; edits of the file by another process (the CLI) are picked up through
 * `fs.watch` on the caps directory (the file is replaced by rename, so the directory is what is
 * watched). Listeners hear every change, so caches that depend on anchors can drop entries.
 *
 * Reloads and changes are ordered by tickets: a reload takes one just before it reads the file,
 * a change just after its new file is in place, and a result is put in force only if no later
 * ticket is in force already. So a reload that read the file before a change, and finishes its
 * (asynchronous) index after it, is dropped instead of restoring the old anchors; one that read
 * after the change carries it. Neither waits for the other.
 */
export class ContextTrust {
  readonly dataDir: string
  readonly context: string
  readonly selfDid: string | undefined
  private readonly log: Logger
  private current: Anchors = emptyAnchors()
  private idx: TrustIndex = { roots: new Set(), require: new Map(), provide: [], revokedIds: new Set() }
  private readonly listeners = new Set<() => void>()
  private watcher: FSWatcher | undefined
  private reloading: Promise<void> | undefined
  private dirty = false
  private readonly read: (dataDir: string, context: string) => Promise<Anchors>
  /** Last ticket handed out, and the ticket of the anchors in force (see the class comment). */
  private issued = 0
  private inForce = 0

  constructor (init: ContextTrustInit) {
    this.dataDir = init.dataDir
    this.context = init.context
    this.selfDid = init.selfDid
    this.log = init.log ?? silentLogger()
    this.read = init.read ?? readAnchors
    if (init.selfDid !== undefined) this.idx = { ...this.idx, roots: new Set([init.selfDid]) }
  }

  get anchors (): Anchors { return this.current }
  get index (): TrustIndex { return this.idx }

  onChange (fn: () => void): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }

  /** Reads the file again and rebuilds the index; coalesces concurrent requests. */
  async reload (): Promise<void> {
    if (this.reloading !== undefined) {
      this.dirty = true
      return await this.reloading
    }
    this.reloading = (async () => {
      do {
        this.dirty = false
        const ticket = ++this.issued
        try {
          await this.apply(await this.read(this.dataDir, this.context), ticket)
        } catch (err) {
          // A half-edited or broken file must not leave the node without anchors: keep the last good set.
          this.log.error({ err, context: this.context }, 'could not reload the anchors; keeping the previous ones')
        }
      } while (this.dirty)
    })()
    try { await this.reloading } finally { this.reloading = undefined }
  }

  /** Read-modify-write of the file; the new anchors are in force when this resolves. */
  async mutate (fn: (a: Anchors) => Anchors | Promise<Anchors>): Promise<Anchors> {
    let ticket = 0
    const next = await mutateAnchors(this.dataDir, this.context, fn, () => { ticket = ++this.issued })
    await this.apply(next, ticket)
    return next
  }

  /**
   * Puts `anchors` in force unless a later ticket already is. (A later one read or wrote the file
   * after this one's read or write, so it holds this change too, or one made after it.)
   */
  private async apply (anchors: Anchors, ticket: number): Promise<void> {
    const idx = await buildIndex(anchors, { selfDid: this.selfDid, log: this.log })
    if (ticket < this.inForce) return
    this.inForce = ticket
    this.current = anchors
    this.idx = idx
    for (const fn of this.listeners) fn()
  }

  /** Starts following edits of the file made by other processes. */
  async watch (): Promise<void> {
    if (this.watcher !== undefined) return
    const dir = capsDir(this.dataDir)
    await mkdir(dir, { recursive: true, mode: 0o700 })
    const name = basename(anchorsPath(this.dataDir, this.context))
    this.watcher = watch(dir, { persistent: false }, (_event, file) => {
      if (file === null || file === name) void this.reload()
    })
    this.watcher.on('error', (err) => { this.log.warn({ err }, 'watching the anchors directory failed') })
  }

  close (): void {
    this.watcher?.close()
    this.watcher = undefined
  }
}
