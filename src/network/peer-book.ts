import { z } from 'zod'
import { sublevel, type Db } from '../store/db.js'
import { MAX_PEER_BOOK_ENTRIES } from './constants.js'

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
  lastHelloAt: z.string().optional(),
  /** ISO-8601 time this node last learned something of the peer (hello, greeting, a dial that worked): eviction order. */
  seenAt: z.string().optional()
})
export type PeerRecord = z.infer<typeof PeerRecord>

export const PEER_BOOK_SUBLEVEL = 'peers'

/** Most addresses kept per peer: the newest first, so a peer that moves does not grow the record. */
const MAX_ADDRS_PER_PEER = 32

export interface PeerBookInit {
  /** Most peers kept (default MAX_PEER_BOOK_ENTRIES). */
  maxEntries?: number
}

export interface PeerBookComponents {
  /** Peers connected now: never evicted (default: none). */
  connected?: () => Iterable<string>
  /** A peer was evicted (e.g. to forget it in libp2p's peer store too). */
  onEvict?: (id: string) => void
}

/**
 * Bounded: gossip can make a node learn any number of peers (a hello costs its sender one fresh
 * key), so beyond `maxEntries` the least recently seen peer that is not connected is evicted.
 * The order is kept in memory (loaded from the records' `seenAt` on first use) and persisted in them.
 */
export class PeerBook {
  private readonly store
  /** Per-peer chain of pending merges: read-modify-write of one record never interleaves. */
  private readonly pending = new Map<string, Promise<unknown>>()
  private readonly maxEntries: number
  /** Peer ids, least recently seen first (a Map keeps insertion order; a touch re-inserts). */
  private order?: Promise<Map<string, true>>

  constructor (db: Db, init: PeerBookInit = {}, private readonly c: PeerBookComponents = {}) {
    this.store = sublevel<unknown>(db, PEER_BOOK_SUBLEVEL)
    this.maxEntries = init.maxEntries ?? MAX_PEER_BOOK_ENTRIES
  }

  /** Number of peers in the book. */
  async size (): Promise<number> {
    return (await this.loadOrder()).size
  }

  private async loadOrder (): Promise<Map<string, true>> {
    this.order ??= (async () => {
      const seen: Array<[string, number]> = []
      for (const r of await this.all()) seen.push([r.id, Date.parse(r.seenAt ?? r.lastHelloAt ?? '') || 0])
      seen.sort((a, b) => a[1] - b[1])
      return new Map(seen.map(([id]) => [id, true]))
    })()
    return await this.order
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
    return await this.serial(id, async () => await this.mergeNow(id, update))
  }

  /** Runs `fn` after every pending change of the peer's record (read-modify-write never interleaves). */
  private async serial<T> (id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.pending.get(id) ?? Promise.resolve()
    const next = prev.catch(() => {}).then(fn)
    this.pending.set(id, next)
    try {
      return await next
    } finally {
      if (this.pending.get(id) === next) this.pending.delete(id)
    }
  }

  /**
   * Dead-node removal (specs/membership.md): forgets every peer whose last hello is older than
   * `cutoff` (unix ms) and that is not connected now, as eviction does. A peer never heard in a
   * hello (an address dialled on purpose) is kept. Returns how many were forgotten.
   */
  async forgetSilent (cutoff: number): Promise<number> {
    const order = await this.loadOrder()
    const stale = (r: PeerRecord | undefined): boolean => r?.lastHelloAt !== undefined && Date.parse(r.lastHelloAt) < cutoff
    const connected = new Set(this.c.connected?.() ?? [])
    let forgotten = 0
    for (const r of await this.all()) {
      if (!stale(r) || connected.has(r.id)) continue
      // re-read in the peer's chain: a hello merged meanwhile keeps it
      const gone = await this.serial(r.id, async () => {
        if (!stale(await this.get(r.id))) return false
        await this.store.del(r.id)
        order.delete(r.id)
        return true
      })
      if (gone) {
        forgotten++
        this.c.onEvict?.(r.id)
      }
    }
    return forgotten
  }

  private async mergeNow (id: string, update: { did?: string, addrs?: string[], lastHelloAt?: string }): Promise<PeerRecord> {
    const order = await this.loadOrder()
    const old = await this.get(id)
    const addrs = [...new Set([...(update.addrs ?? []), ...(old?.addrs ?? [])])].slice(0, MAX_ADDRS_PER_PEER)
    const rec: PeerRecord = { id, addrs }
    const did = update.did ?? old?.did
    if (did !== undefined) rec.did = did
    const lastHelloAt = update.lastHelloAt ?? old?.lastHelloAt
    if (lastHelloAt !== undefined) rec.lastHelloAt = lastHelloAt
    rec.seenAt = new Date().toISOString()
    await this.store.put(id, rec)
    order.delete(id)
    order.set(id, true)
    if (order.size > this.maxEntries) await this.evict(order, id)
    return rec
  }

  /** Evicts the least recently seen peers that are not connected (nor `keep`) down to the bound. */
  private async evict (order: Map<string, true>, keep: string): Promise<void> {
    const connected = new Set(this.c.connected?.() ?? [])
    const victims: string[] = []
    let excess = order.size - this.maxEntries
    for (const id of order.keys()) {
      if (excess <= 0) break
      if (id === keep || connected.has(id)) continue
      victims.push(id)
      excess--
    }
    // Taken out of the order at once, so concurrent merges do not pick the same victims.
    for (const id of victims) order.delete(id)
    await this.store.batch(victims.map(id => ({ type: 'del' as const, key: id })))
    for (const id of victims) this.c.onEvict?.(id)
  }
}
