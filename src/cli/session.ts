import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { identityFromRaw, newIdentity, type Identity } from '../identity/identity.js'
import { InvalidArgument } from '../lib/errors.js'
import { grantToken } from '../security/issue.js'

/**
 * An unlock session (`dms unlock`): a fresh key the context's key delegates everything to, by a
 * UCAN that expires with the session. The CLI signs with it while it lasts, so the passphrase is
 * typed once; the long-lived key stays encrypted. Kept in `<data-dir>/sessions/<context>.json`,
 * mode 0600; `dms lock` revokes the token and deletes the file.
 */
export const SESSION_MAX_MS = 7 * 86_400_000

const SessionFile = z.object({
  version: z.literal(1),
  context: z.string(),
  did: z.string(),
  /** The session's raw Ed25519 key (seed ‖ public), base64url: short-lived by its token. */
  key: z.string(),
  token: z.string(),
  expiry: z.string()
})

export interface UnlockSession { context: string, identity: Identity, token: string, expiry: string }

export function sessionPath (dataDir: string, context: string): string {
  return join(dataDir, 'sessions', `${context}.json`)
}

/** The context's session, if one exists and has not expired (an expired one is removed). */
export async function readSession (dataDir: string, context: string, now = Date.now()): Promise<UnlockSession | undefined> {
  const path = sessionPath(dataDir, context)
  let text: string
  try { text = await readFile(path, 'utf8') } catch { return undefined }
  const parsed = SessionFile.safeParse((() => { try { return JSON.parse(text) } catch { return undefined } })())
  if (!parsed.success || parsed.data.context !== context || Date.parse(parsed.data.expiry) <= now + 1000) {
    await rm(path, { force: true })
    return undefined
  }
  const f = parsed.data
  return { context, identity: identityFromRaw(new Uint8Array(Buffer.from(f.key, 'base64url'))), token: f.token, expiry: f.expiry }
}

/** Makes a session for `user` (the context's loaded key) lasting `forMs`, and stores it. */
export async function createSession (dataDir: string, context: string, user: Identity, forMs: number): Promise<UnlockSession> {
  if (forMs > SESSION_MAX_MS) throw new InvalidArgument('--for is at most 7d: a session is meant to be short-lived', { field: 'for' })
  const identity = await newIdentity()
  const expMs = Date.now() + forMs
  // `/` on the context's own authority: whatever the context may do as a root, the session may
  // do until it expires. Tokens others granted the context are not passed on (calls that need
  // them sign with the context's key).
  const token = await grantToken(user, { subject: identity.did, caps: ['/'], topics: ['/'], exp: Math.floor(expMs / 1000) })
  const expiry = new Date(Math.floor(expMs / 1000) * 1000).toISOString()
  const path = sessionPath(dataDir, context)
  await mkdir(join(dataDir, 'sessions'), { recursive: true, mode: 0o700 })
  const file: z.infer<typeof SessionFile> = { version: 1, context, did: identity.did, key: Buffer.from(identity.exportRaw()).toString('base64url'), token, expiry }
  await writeFile(`${path}.tmp`, JSON.stringify(file, null, 2) + '\n', { mode: 0o600 })
  await rename(`${path}.tmp`, path)
  return { context, identity, token, expiry }
}

export async function deleteSession (dataDir: string, context: string): Promise<void> {
  await rm(sessionPath(dataDir, context), { force: true })
}
