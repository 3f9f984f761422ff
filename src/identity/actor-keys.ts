import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto'
import { z } from 'zod'
import { InvalidState } from '../lib/errors.js'
import { sublevel, type Db } from '../store/db.js'
import { identityFromRaw, newIdentity, type Identity } from './identity.js'

/** Level sublevel of the child actors' sealed keys. */
export const ACTOR_KEYS_SUBLEVEL = 'actor-keys'

const Sealed = z.object({
  did: z.string(),
  /** AES-256-GCM of the 64-byte raw key: base64 of iv (12) ‖ tag (16) ‖ ciphertext. */
  sealed: z.string()
})

/**
 * The keys of a node's child actors (allocations, the resource manager, …), each an Ed25519 key
 * of its own, kept in the node's db **encrypted at rest** with AES-256-GCM under a key derived
 * (HKDF-SHA256) from the node's own private key, which is itself kept encrypted under the
 * passphrase. So no passphrase is needed beyond the one that opened the node, and a copy of the db
 * alone reveals nothing. The actor's name is bound as associated data: a sealed key cannot be
 * moved to another actor's entry.
 */
export class ActorKeys {
  private readonly sub: ReturnType<typeof sublevel<unknown>>
  private readonly secret: Buffer

  constructor (db: Db, node: Identity) {
    this.sub = sublevel<unknown>(db, ACTOR_KEYS_SUBLEVEL)
    this.secret = Buffer.from(hkdfSync('sha256', node.exportRaw(), Buffer.from('dms actor keys v1'), Buffer.alloc(0), 32))
  }

  /** The key of actor `name`, created (and persisted before it is returned) on first use. */
  async loadOrCreate (name: string): Promise<Identity> {
    const found = await this.load(name)
    if (found !== undefined) return found
    const id = await newIdentity()
    await this.sub.put(name, { did: id.did, sealed: this.seal(name, id.exportRaw()) })
    return id
  }

  async load (name: string): Promise<Identity | undefined> {
    const raw = await this.sub.get(name)
    if (raw === undefined) return undefined
    const rec = Sealed.safeParse(raw)
    if (!rec.success) throw new InvalidState(`the key of actor ${name} is unreadable`, { actor: name })
    const id = identityFromRaw(this.open(name, rec.data.sealed))
    if (id.did !== rec.data.did) throw new InvalidState(`the key of actor ${name} does not match its DID`, { actor: name })
    return id
  }

  /** Forgets an actor's key (its allocation is gone for good). Idempotent. */
  async remove (name: string): Promise<void> { await this.sub.del(name) }

  private seal (name: string, raw: Uint8Array): string {
    const iv = randomBytes(12)
    const c = createCipheriv('aes-256-gcm', this.secret, iv)
    c.setAAD(Buffer.from(name))
    const ct = Buffer.concat([c.update(raw), c.final()])
    return Buffer.concat([iv, c.getAuthTag(), ct]).toString('base64')
  }

  private open (name: string, sealed: string): Uint8Array {
    const b = Buffer.from(sealed, 'base64')
    try {
      const d = createDecipheriv('aes-256-gcm', this.secret, b.subarray(0, 12))
      d.setAAD(Buffer.from(name))
      d.setAuthTag(b.subarray(12, 28))
      return new Uint8Array(Buffer.concat([d.update(b.subarray(28)), d.final()]))
    } catch {
      throw new InvalidState(`the key of actor ${name} does not open with this node's key`, { actor: name })
    }
  }
}
