import { createCipheriv, createDecipheriv, randomBytes, scrypt as scryptCb } from 'node:crypto'
import { link, mkdir, readFile, readdir, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { z } from 'zod'
import { InvalidArgument, KeyExists, KeyNotFound, WrongPassphrase } from '../lib/errors.js'
import { identityFromRaw, newIdentity, type Identity } from './identity.js'

const scrypt = promisify(scryptCb) as (pw: string, salt: Buffer, len: number, opts: { N: number, r: number, p: number, maxmem: number }) => Promise<Buffer>

/**
 * Keys at rest: keys/<context>.json, mode 0600, the 64-byte Ed25519 secret sealed with
 * AES-256-GCM under a key stretched from the passphrase by scrypt. The DID is stored in clear
 * (it is public) so `dms key list` needs no passphrase.
 *
 * One data dir, one passphrase: a new key is sealed only with the passphrase that opens the keys
 * already there (`WrongPassphrase` otherwise), so every command unlocks every context with the
 * same secret. A key file is created exclusively (hard link of a complete temporary file): of two
 * processes creating the same context at once, one wins and the other gets `KeyExists`, never a
 * silently replaced key.
 */
// scrypt N=2^15, r=8: ~32 MiB and ~80 ms per unlock here — costly to brute-force, cheap enough
// that every `dms` command may unlock the user key.
const SCRYPT = { N: 2 ** 15, r: 8, p: 1 }
const SCRYPT_MAXMEM = 64 * 1024 * 1024

export const CONTEXT_NAME = /^[a-z][a-z0-9_-]{0,31}$/

const KeyFile = z.object({
  version: z.literal(1),
  context: z.string(),
  did: z.string(),
  kdf: z.object({ name: z.literal('scrypt'), N: z.number(), r: z.number(), p: z.number(), salt: z.string() }),
  cipher: z.object({ name: z.literal('aes-256-gcm'), iv: z.string(), tag: z.string() }),
  ciphertext: z.string()
})
type KeyFile = z.infer<typeof KeyFile>

export interface KeyInfo { context: string, did: string }

export class Keystore {
  readonly dir: string

  constructor (dataDir: string) {
    this.dir = join(dataDir, 'keys')
  }

  private path (context: string): string {
    if (!CONTEXT_NAME.test(context)) throw new InvalidArgument(`bad context name '${context}': lower-case letters, digits, '-' and '_', at most 32`)
    return join(this.dir, `${context}.json`)
  }

  async exists (context: string): Promise<boolean> {
    return (await this.readFile(context)) !== undefined
  }

  private async readFile (context: string): Promise<KeyFile | undefined> {
    let text: string
    try { text = await readFile(this.path(context), 'utf8') } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
    const parsed = KeyFile.safeParse(JSON.parse(text))
    if (!parsed.success) throw new InvalidArgument(`key file ${this.path(context)} is not a dms key file`)
    return parsed.data
  }

  async create (context: string, passphrase: string, identity?: Identity): Promise<Identity> {
    const exists = (): KeyExists => new KeyExists(`a key for context '${context}' already exists (${this.path(context)})`, { context })
    if (await this.exists(context)) throw exists()
    await this.checkPassphrase(passphrase)
    const id = identity ?? await newIdentity()
    const salt = randomBytes(16)
    const iv = randomBytes(12)
    const key = await scrypt(passphrase, salt, 32, { ...SCRYPT, maxmem: SCRYPT_MAXMEM })
    const cipher = createCipheriv('aes-256-gcm', key, iv)
    cipher.setAAD(Buffer.from(`dms-key:${context}:${id.did}`))
    const ct = Buffer.concat([cipher.update(id.exportRaw()), cipher.final()])
    const file: KeyFile = {
      version: 1,
      context,
      did: id.did,
      kdf: { name: 'scrypt', ...SCRYPT, salt: salt.toString('base64') },
      cipher: { name: 'aes-256-gcm', iv: iv.toString('base64'), tag: cipher.getAuthTag().toString('base64') },
      ciphertext: ct.toString('base64')
    }
    await mkdir(this.dir, { recursive: true, mode: 0o700 })
    const tmp = `${this.path(context)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`
    await writeFile(tmp, JSON.stringify(file, null, 2) + '\n', { mode: 0o600, flag: 'wx' })
    try {
      // link() fails with EEXIST where rename() would replace: the first creator keeps its key.
      await link(tmp, this.path(context))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw exists()
      throw err
    } finally {
      await unlink(tmp).catch(() => {})
    }
    return id
  }

  /**
   * Throws `WrongPassphrase` unless `passphrase` opens this data dir's keys (checked on one of
   * them: `dms`, else `user`, else the first listed). Passes when there is no key yet.
   */
  async checkPassphrase (passphrase: string): Promise<void> {
    const contexts = (await this.list()).map(k => k.context)
    const probe = ['dms', 'user'].find(c => contexts.includes(c)) ?? contexts[0]
    if (probe === undefined) return
    try {
      await this.load(probe, passphrase)
    } catch (err) {
      if (err instanceof WrongPassphrase) {
        throw new WrongPassphrase(`the passphrase does not open the keys of ${this.dir}: one data dir has one passphrase`, { context: probe })
      }
      throw err
    }
  }

  async load (context: string, passphrase: string): Promise<Identity> {
    const file = await this.readFile(context)
    if (file === undefined) throw new KeyNotFound(`no key for context '${context}' in ${this.dir} (run 'dms init' or 'dms key new ${context}')`, { context })
    const key = await scrypt(passphrase, Buffer.from(file.kdf.salt, 'base64'), 32, { N: file.kdf.N, r: file.kdf.r, p: file.kdf.p, maxmem: SCRYPT_MAXMEM })
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(file.cipher.iv, 'base64'))
    decipher.setAAD(Buffer.from(`dms-key:${context}:${file.did}`))
    decipher.setAuthTag(Buffer.from(file.cipher.tag, 'base64'))
    let raw: Buffer
    try {
      raw = Buffer.concat([decipher.update(Buffer.from(file.ciphertext, 'base64')), decipher.final()])
    } catch {
      throw new WrongPassphrase(`the passphrase does not open the '${context}' key (${this.path(context)})`, { context })
    }
    const id = identityFromRaw(raw)
    if (id.did !== file.did) throw new WrongPassphrase(`the '${context}' key file is inconsistent: its DID does not match its key`, { context })
    return id
  }

  async loadOrCreate (context: string, passphrase: string): Promise<Identity> {
    if (await this.exists(context)) return await this.load(context, passphrase)
    try {
      return await this.create(context, passphrase)
    } catch (err) {
      // Another process created it first: theirs is the key.
      if (err instanceof KeyExists) return await this.load(context, passphrase)
      throw err
    }
  }

  async did (context: string): Promise<string> {
    const file = await this.readFile(context)
    if (file === undefined) throw new KeyNotFound(`no key for context '${context}' in ${this.dir}`, { context })
    return file.did
  }

  async list (): Promise<KeyInfo[]> {
    let names: string[]
    try { names = await readdir(this.dir) } catch { return [] }
    const out: KeyInfo[] = []
    for (const n of names.filter(n => n.endsWith('.json')).sort()) {
      const context = n.slice(0, -'.json'.length)
      const file = await this.readFile(context).catch(() => undefined)
      if (file !== undefined) out.push({ context, did: file.did })
    }
    return out
  }
}
