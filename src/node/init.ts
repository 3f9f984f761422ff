import { mkdir } from 'node:fs/promises'
import { Keystore } from '../identity/keystore.js'
import { addRoot } from '../security/index.js'

export interface InitResult { dataDir: string, dms: string, user: string, created: string[] }

/**
 * Creates the `dms` (node) and `user` keys if missing and makes the user a root of the node: the
 * person who installed the node may do everything on it. Idempotent.
 */
export async function initDataDir (dataDir: string, passphrase: string): Promise<InitResult> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  const ks = new Keystore(dataDir)
  const created: string[] = []
  for (const ctx of ['dms', 'user']) {
    if (!await ks.exists(ctx)) { await ks.create(ctx, passphrase); created.push(ctx) }
  }
  const user = await ks.did('user')
  await addRoot(dataDir, 'dms', user)
  return { dataDir, dms: await ks.did('dms'), user, created }
}

