import { z } from 'zod'
import { sublevel, type Db } from '../store/db.js'

/**
 * The persisted peer book (level sublevel `peers`, key = PeerId): what this node learned of
 * other peers that the libp2p peer store (in memory) would forget at restart — the DIDs and
 * addresses from hello, and addresses dialled on purpose. Live state (connections) is not here.
 */
export const PeerRecord = z.object({
  id: z.string().min(1).max(128),
  did: z.string().startsWith('did:key:z').max(256).optional(),
  addrs: z.array(z.string().max(1024)).max(64),
  /** ISO-8601 time of the last hello heard from this peer. */
  lastHelloAt: z.string().optional()
})
export type PeerRecord = z.infer<typeof PeerRecord>

export const PEER_BOOK_SUBLEVEL = 'peers'

/** Most addresses kept per peer: the newest first, so a peer that moves does not grow the record. */
const MAX_ADDRS_PER_PEER = 32

export class PeerBook {
  private readonly store
  /** Per-peer chain of pending merges: read-modify-write of one record never interleaves. */
  private readonly pending = new Map<string, Promise<unknown>>()

  constructor (db: Db) {
    this.store = sublevel<unknown>(db, PEER_BOOK_SUBLEVEL)
  }

  async get (id: string): Promise<PeerRecord | undefined> {
    const r = PeerRecord.safeParse(await this.store.get(id))
    return r.success ? r.data : undefined
  }

  /** Every well-formed record (a malformed one, e.g. from an older version, is skipped). */
  async all (): Promise<PeerRecord[]> {
    const out: PeerRecord[] = []
    for await (const value of this.store.values()) {
      const r = PeerRecord.safeParse(value)
      if (r.success) out.push(r.data)
    }
    return out
  }

  /**
   * Merges what was learned into the peer's record: new addresses go first (they are the most
   * recent), `did` and `lastHelloAt` replace the old values when given.
   */
  async merge (id: string, update: { did?: string, addrs?: string[], lastHelloAt?: string }): Promise<PeerRecord> {
    const prev = this.pending.get(id) ?? Promise.resolve()
    const next = prev.catch(() => {}).then(async () => await this.mergeNow(id, update))
    this.pending.set(id, next)
    try {
      return await next
    } finally {
      if (this.pending.get(id) === next) this.pending.delete(id)
    }
  }

  private async mergeNow (id: string, update: { did?: string, addrs?: string[], lastHelloAt?: string }): Promise<PeerRecord> {
    const old = await this.get(id)
    const addrs = [...new Set([...(update.addrs ?? []), ...(old?.addrs ?? [])])].slice(0, MAX_ADDRS_PER_PEER)
    const rec: PeerRecord = { id, addrs }
    const did = update.did ?? old?.did
    if (did !== undefined) rec.did = did
    const lastHelloAt = update.lastHelloAt ?? old?.lastHelloAt
    if (lastHelloAt !== undefined) rec.lastHelloAt = lastHelloAt
    await this.store.put(id, rec)
    return rec
  }
}
