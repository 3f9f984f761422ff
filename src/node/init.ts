import { mkdir } from 'node:fs/promises'
import { Keystore } from '../identity/keystore.js'
import { addRoot, readAnchors } from '../security/index.js'
import { lockDataDir, type DataDirLock } from './data-dir-lock.js'

export interface InitResult { dataDir: string, dms: string, user: string, created: string[] }

/**
 * How long `dms init` waits for another process that is setting the same data dir up (creating
 * two keys: scrypt twice, ~0.2 s; generous for a loaded machine). A running daemon is not waited for.
 */
export const INIT_LOCK_WAIT_MS = 15_000

/**
 * Creates the `dms` (node) and `user` keys if missing and makes the user a root of the node: the
 * person who installed the node may do everything on it. Idempotent.
 *
 * The passphrase must open the keys already there (`WrongPassphrase`): one data dir, one
 * passphrase. Keys are created only under the data dir lock — `lock` when the caller holds it
 * (the daemon), else taken here — so two first runs at once make one `dms` and one `user` key,
 * not two of which one is lost while both are roots.
 */
export async function initDataDir (dataDir: string, passphrase: string, opts: { lock?: DataDirLock } = {}): Promise<InitResult> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  const ks = new Keystore(dataDir)
  const created: string[] = []
  const missing = async (): Promise<string[]> => {
    const out: string[] = []
    for (const ctx of ['dms', 'user']) if (!await ks.exists(ctx)) out.push(ctx)
    return out
  }
  // Written only when missing: a running daemon watches this file.
  const userIsRoot = async (): Promise<string> => {
    const user = await ks.did('user')
    if (!(await readAnchors(dataDir, 'dms')).roots.includes(user)) await addRoot(dataDir, 'dms', user)
    return user
  }
  let user: string
  if ((await missing()).length === 0) {
    // Set up already (perhaps by a daemon that holds the lock now): nothing to create, but the
    // passphrase must still be the data dir's.
    await ks.checkPassphrase(passphrase)
    user = await userIsRoot()
  } else {
    const lock = opts.lock ?? await lockDataDir(dataDir, 'init', { waitMs: INIT_LOCK_WAIT_MS })
    try {
      // Looked at again under the lock: another process may have created them meanwhile.
      // (create checks the passphrase against the keys already there.)
      const todo = await missing()
      if (todo.length === 0) await ks.checkPassphrase(passphrase)
      for (const ctx of todo) { await ks.create(ctx, passphrase); created.push(ctx) }
      user = await userIsRoot()
    } finally {
      if (opts.lock === undefined) await lock.release()
    }
  }
  return { dataDir, dms: await ks.did('dms'), user, created }
}
