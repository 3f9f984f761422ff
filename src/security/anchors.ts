import { randomBytes } from 'node:crypto'
import { mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { isDid } from '../identity/did.js'
import { CONTEXT_NAME } from '../identity/keystore.js'
import { Conflict, InvalidArgument, InvalidConfig, NotFound } from '../lib/errors.js'
import { verifyChain } from './chain.js'
import { checkTime, decodeToken, tokenId } from './ucan.js'

/**
 * Trust anchors of one context, persisted at `<data-dir>/caps/<context>.json` (mode 0600,
 * replaced atomically by rename so a reader never sees half a file):
 *
 *   roots    DIDs trusted fully: any chain with a link issued by one is anchored
 *   require  tokens issued by a root to a foreign DID X: chains anchored at X are accepted within
 *            what the require token grants (a whole foreign organisation, attenuated)
 *   provide  tokens this context holds (issued to it), presented as proof when it invokes
 *   revoke   tokens this context refuses, whoever issued them (a local decision; no signature)
 */
export type AnchorKind = 'root' | 'require' | 'provide' | 'revoke'
export const ANCHOR_KINDS: readonly AnchorKind[] = ['root', 'require', 'provide', 'revoke']

export interface Anchors {
  roots: string[]
  require: string[]
  provide: string[]
  revoke: string[]
}

const ANCHORS_VERSION = 1
const AnchorsFile = z.strictObject({
  version: z.literal(ANCHORS_VERSION),
  context: z.string(),
  roots: z.array(z.string()),
  require: z.array(z.string()),
  provide: z.array(z.string()),
  revoke: z.array(z.string())
})

const LIST: Record<AnchorKind, keyof Anchors> = { root: 'roots', require: 'require', provide: 'provide', revoke: 'revoke' }

export function emptyAnchors (): Anchors {
  return { roots: [], require: [], provide: [], revoke: [] }
}

export function capsDir (dataDir: string): string {
  return join(dataDir, 'caps')
}

export function anchorsPath (dataDir: string, context: string): string {
  if (!CONTEXT_NAME.test(context)) throw new InvalidArgument(`bad context name '${context}': lower-case letters, digits, '-' and '_', at most 32`)
  return join(capsDir(dataDir), `${context}.json`)
}

export async function contextExists (dataDir: string, context: string): Promise<boolean> {
  try { await stat(anchorsPath(dataDir, context)); return true } catch { return false }
}

/** The anchors of a context; empty when the context has no file yet. */
export async function readAnchors (dataDir: string, context: string): Promise<Anchors> {
  const path = anchorsPath(dataDir, context)
  let text: string
  try { text = await readFile(path, 'utf8') } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyAnchors()
    throw err
  }
  let json: unknown
  try { json = JSON.parse(text) } catch { throw new InvalidConfig(`${path} is not JSON`, { path }) }
  const r = AnchorsFile.safeParse(json)
  if (!r.success) throw new InvalidConfig(`${path} is not a dms anchors file: ${r.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).slice(0, 3).join('; ')}`, { path })
  if (r.data.context !== context) throw new InvalidConfig(`${path} holds the anchors of context '${r.data.context}', not '${context}'`, { path })
  const { roots, require, provide, revoke } = r.data
  return { roots, require, provide, revoke }
}

export async function writeAnchors (dataDir: string, context: string, anchors: Anchors): Promise<void> {
  const path = anchorsPath(dataDir, context)
  await mkdir(capsDir(dataDir), { recursive: true, mode: 0o700 })
  const body = { version: ANCHORS_VERSION, context, ...anchors }
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`
  try {
    await writeFile(tmp, JSON.stringify(body, null, 2) + '\n', { mode: 0o600 })
    await rename(tmp, path)
  } catch (err) {
    await unlink(tmp).catch(() => {})
    throw err
  }
}

// One writer at a time per file within this process: read-modify-write must not interleave.
const locks = new Map<string, Promise<unknown>>()

/**
 * Read-modify-write of a context's anchors, serialized per file. Returns the new anchors.
 * `written` is called the moment the new file is in place, still inside the serialized section:
 * a live view (ContextTrust) orders its reloads against that instant.
 */
export async function mutateAnchors (dataDir: string, context: string, fn: (a: Anchors) => Anchors | Promise<Anchors>, written?: () => void): Promise<Anchors> {
  const path = anchorsPath(dataDir, context)
  const prev = locks.get(path) ?? Promise.resolve()
  const run = prev.catch(() => {}).then(async () => {
    const next = await fn(await readAnchors(dataDir, context))
    await writeAnchors(dataDir, context, next)
    written?.()
    return next
  })
  locks.set(path, run)
  try { return await run } finally {
    if (locks.get(path) === run) locks.delete(path)
  }
}

/** Creates an empty context (`dms cap new`). Throws `Conflict` when it exists. */
export async function newContext (dataDir: string, context: string): Promise<void> {
  if (await contextExists(dataDir, context)) throw new Conflict(`capability context '${context}' already exists (${anchorsPath(dataDir, context)})`, { context })
  await writeAnchors(dataDir, context, emptyAnchors())
}

/**
 * Checks an anchor value before it is stored: a root is a did:key; a token must decode, carry
 * valid signatures and attenuations all along its chain, and not be expired already (an
 * anchor that can never work is a mistake worth reporting). A provide token must be issued to
 * the context itself (`subject`, when known): it is what the context presents as its own.
 * Returns the normalized value.
 */
export async function validateAnchor (kind: AnchorKind, value: string, opts: { now?: number, subject?: string } = {}): Promise<string> {
  const v = value.trim()
  if (kind === 'root') {
    if (!isDid(v)) throw new InvalidArgument(`a root is an Ed25519 did:key, got '${v.slice(0, 80)}'`)
    return v
  }
  const token = decodeToken(v)
  await verifyChain(token)
  if (kind !== 'revoke') checkTime(token, opts.now ?? Date.now())
  if (kind === 'provide' && opts.subject !== undefined && token.payload.aud !== opts.subject) {
    throw new InvalidArgument(`a provide anchor must be issued to this context (${opts.subject}); this token was issued to ${token.payload.aud}`)
  }
  return v
}

/** Whether `entry` (a DID or token in a list) is named by `ref` (the same text, or a token's id). */
function matches (kind: AnchorKind, entry: string, ref: string): boolean {
  return entry === ref || (kind !== 'root' && tokenId(entry) === ref)
}

export function withAnchor (anchors: Anchors, kind: AnchorKind, value: string): Anchors {
  const key = LIST[kind]
  if (anchors[key].includes(value)) return anchors
  return { ...anchors, [key]: [...anchors[key], value] }
}

/** Removes `ref` (the DID/token, or a token's id). Throws `NotFound` when it is not there. */
export function withoutAnchor (anchors: Anchors, kind: AnchorKind, ref: string): Anchors {
  const key = LIST[kind]
  const r = ref.trim()
  const kept = anchors[key].filter(e => !matches(kind, e, r))
  if (kept.length === anchors[key].length) throw new NotFound(`no ${kind} anchor '${r.slice(0, 60)}${r.length > 60 ? '…' : ''}'`, { kind })
  return { ...anchors, [key]: kept }
}

/** Adds an anchor to a context's file; `subject` is the context's DID, when known. */
export async function addAnchor (dataDir: string, context: string, kind: AnchorKind, value: string, subject?: string): Promise<Anchors> {
  const v = await validateAnchor(kind, value, { subject })
  return await mutateAnchors(dataDir, context, a => withAnchor(a, kind, v))
}

export async function removeAnchor (dataDir: string, context: string, kind: AnchorKind, ref: string): Promise<Anchors> {
  return await mutateAnchors(dataDir, context, a => withoutAnchor(a, kind, ref))
}

/** Makes `did` a root of `context` (`dms init` makes the user DID a root of `dms`). Idempotent. */
export async function addRoot (dataDir: string, context: string, did: string): Promise<void> {
  await addAnchor(dataDir, context, 'root', did)
}
