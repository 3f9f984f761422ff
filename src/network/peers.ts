import type { Connection, Libp2p, PeerId } from '@libp2p/interface'
import type { GossipSub } from '@libp2p/gossipsub'
import type { PeerScoreStatsDump } from '@libp2p/gossipsub/score'
import type { KadDHT } from '@libp2p/kad-dht'
import type { Ping } from '@libp2p/ping'
import type { Identify } from '@libp2p/identify'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { didFromPeerId } from '../identity/did.js'
import { BadRequest, Timeout, Unreachable } from '../lib/errors.js'
import type { Logger } from '../lib/log.js'
import { BACKGROUND_DIAL_TIMEOUT_MS, FIND_PEER_TIMEOUT_MS, GREET_TIMEOUT_MS, MAX_ADDR_LENGTH, MAX_HELLO_ADDRS, MAX_PENDING_GREETINGS } from './constants.js'
import type { Handshakes } from './hello.js'
import type { PeerBook } from './peer-book.js'
import type { PeerInfo, PeerService } from './peer-service.js'

// A type alias, not an interface: libp2p's ServiceMap needs the implicit index signature.
export type NetworkServices = {
  identify: Identify
  ping: Ping
  dht: KadDHT
  pubsub: GossipSub
}
export type Host = Libp2p<NetworkServices>

/** Multiaddr protocol code of `/p2p/<peer id>`. */
const P2P_CODE = 421

/** The peer id a multiaddr names in its last `/p2p/` component, if any. */
export function peerIdOf (ma: Multiaddr): string | undefined {
  return ma.getComponents().findLast(c => c.code === P2P_CODE)?.value
}

/** `ma` ending in exactly one `/p2p/<id>`. */
function withPeer (ma: Multiaddr, id: string): string {
  return peerIdOf(ma) === undefined ? `${ma.toString()}/p2p/${id}` : ma.toString()
}

/** The parts of gossipsub's implementation that report scores (not on its public interface). */
interface ScoreInspect {
  getScore: (peerId: string) => number
  dumpPeerScoreStats: () => PeerScoreStatsDump
}
function hasScores (p: object): p is ScoreInspect {
  return typeof (p as Partial<ScoreInspect>).getScore === 'function' && typeof (p as Partial<ScoreInspect>).dumpPeerScoreStats === 'function'
}

/** kad-dht's routing table (an implementation detail, read only for `/dms/node/peers/dht`). */
interface RoutingTableInspect {
  routingTable: { kb: { toIterable: () => Iterable<{ peerId: PeerId }> } }
}
function hasRoutingTable (d: object): d is RoutingTableInspect {
  const rt = (d as Partial<RoutingTableInspect>).routingTable
  return typeof rt?.kb?.toIterable === 'function'
}

export interface PeersComponents {
  node: Host
  book: PeerBook
  handshakes: Handshakes
  /** The greeting callback, once the actor layer installed it. */
  greet: () => ((peerId: string) => Promise<void>) | undefined
  /** A valid hello from another peer was recorded (events, metrics). */
  onHello?: (hello: { peerId: string, did: string }) => void
  log: Logger
}

/** The errors a network operation reports: Timeout when the caller's deadline passed. */
function netError (err: unknown, signal: AbortSignal, what: string, peer: string): Timeout | Unreachable {
  if (signal.aborted) return new Timeout(`${what} timed out`, { peer })
  return new Unreachable(`${what} failed: ${err instanceof Error ? err.message : String(err)}`, { peer })
}

/**
 * The peer service behaviours use, over the libp2p host, the persisted peer book and the hello
 * handshake. Also dials for the actor transport (`dialPeer`) and resolves addresses.
 */
export class Peers implements PeerService {
  private readonly node: Host
  private readonly self: string
  private readonly log: Logger
  /** Background work (dial + greet after a hello) that `stop()` waits out. */
  private readonly background = new Set<Promise<void>>()
  private stopping = new AbortController()

  constructor (private readonly c: PeersComponents) {
    this.node = c.node
    this.self = c.node.peerId.toString()
    this.log = c.log
  }

  start (): void {
    this.stopping = new AbortController()
    this.node.addEventListener('peer:disconnect', this.onDisconnect)
  }

  async stop (): Promise<void> {
    this.stopping.abort()
    this.node.removeEventListener('peer:disconnect', this.onDisconnect)
    await Promise.allSettled([...this.background])
  }

  private readonly onDisconnect = (evt: CustomEvent<PeerId>): void => {
    this.c.handshakes.disconnected(evt.detail.toString())
  }

  private parsePeer (peer: string): PeerId {
    try { return peerIdFromString(peer) } catch { throw new BadRequest(`not a peer id: '${peer.slice(0, 80)}'`, { peer: peer.slice(0, 80) }) }
  }

  async list (): Promise<PeerInfo[]> {
    const connected = new Set(this.node.getPeers().map(p => p.toString()))
    const byId = new Map<string, PeerInfo>()
    for (const rec of await this.c.book.all()) {
      byId.set(rec.id, { id: rec.id, ...(rec.did !== undefined ? { did: rec.did } : {}), addrs: [...rec.addrs], connected: false, ...(rec.lastHelloAt !== undefined ? { lastHelloAt: rec.lastHelloAt } : {}) })
    }
    for (const peer of await this.node.peerStore.all()) {
      const id = peer.id.toString()
      const info = byId.get(id) ?? { id, addrs: [], connected: false }
      for (const a of peer.addresses) {
        const s = withPeer(a.multiaddr, id)
        if (!info.addrs.includes(s)) info.addrs.push(s)
      }
      byId.set(id, info)
    }
    for (const id of connected) if (!byId.has(id)) byId.set(id, { id, addrs: [], connected: true })
    byId.delete(this.self)
    return [...byId.values()]
      .map(p => ({ ...p, connected: connected.has(p.id) }))
      .sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  }

  async ping (peer: string, signal: AbortSignal): Promise<number> {
    if (peer === this.self) throw new BadRequest('a node cannot ping itself', { peer })
    const id = this.parsePeer(peer)
    try {
      return await this.node.services.ping.ping(id, { signal })
    } catch (err) {
      throw netError(err, signal, `ping of ${peer}`, peer)
    }
  }

  async connect (address: string, signal: AbortSignal): Promise<{ id: string, connected: boolean }> {
    let ma: Multiaddr
    try { ma = multiaddr(address) } catch { throw new BadRequest(`not a multiaddr: '${address.slice(0, 200)}'`) }
    const id = peerIdOf(ma)
    if (id === undefined) throw new BadRequest(`the address must end in /p2p/<peer id>: '${address.slice(0, 200)}'`)
    if (id === this.self) throw new BadRequest('a node cannot connect to itself', { peer: id })
    const peer = this.parsePeer(id)
    // The address goes into the book only once a connection through it exists: libp2p's dial
    // returns any existing connection without trying the address, so when connected otherwise
    // the address is dialled anyway (a second connection), and a bad one fails here.
    const at = ma.decapsulateCode(P2P_CODE)
    const open = this.node.getConnections(peer).filter(c => c.status === 'open')
    if (!open.some(c => c.remoteAddr.decapsulateCode(P2P_CODE).equals(at))) {
      try {
        await this.node.dial(ma, { signal, force: open.length > 0 })
      } catch (err) {
        throw netError(err, signal, `connecting to ${address}`, id)
      }
    }
    await this.c.book.merge(id, { addrs: [ma.toString()] })
    return { id, connected: this.node.getConnections(peer).length > 0 }
  }

  async dht (): Promise<{ mode: 'server' | 'client', peers: string[] }> {
    const dht = this.node.services.dht
    const peers = hasRoutingTable(dht) ? [...dht.routingTable.kb.toIterable()].map(p => p.peerId.toString()).sort() : []
    return { mode: dht.getMode(), peers }
  }

  /**
   * Per peer: gossipsub's total `score` (recomputed each heartbeat, 1 s), the hello handshake's
   * `appScore` (fresh), the `behaviourPenalty` gossipsub applied, `invalidMessages`, the messages
   * of it our topic validators rejected (summed over topics, decaying: gossip-score.ts), and
   * `topics`, how many of this node's topics the peer subscribes to.
   */
  async scores (): Promise<Record<string, Record<string, number>>> {
    const pubsub = this.node.services.pubsub
    const dump: PeerScoreStatsDump = hasScores(pubsub) ? pubsub.dumpPeerScoreStats() : {}
    const topics = new Map<string, number>()
    for (const t of pubsub.getTopics()) {
      for (const p of pubsub.getSubscribers(t)) topics.set(p.toString(), (topics.get(p.toString()) ?? 0) + 1)
    }
    const ids = new Set([...Object.keys(dump), ...this.c.handshakes.known(), ...topics.keys()])
    ids.delete(this.self)
    const out: Record<string, Record<string, number>> = {}
    for (const id of [...ids].sort()) {
      out[id] = {
        score: hasScores(pubsub) ? pubsub.getScore(id) : 0,
        appScore: this.c.handshakes.appScore(id),
        behaviourPenalty: dump[id]?.behaviourPenalty ?? 0,
        invalidMessages: Math.round(Object.values(dump[id]?.topics ?? {}).reduce((sum, t) => sum + t.invalidMessageDeliveries, 0) * 100) / 100,
        topics: topics.get(id) ?? 0
      }
    }
    return out
  }

  /** Application-specific gossipsub score (`scoreParams.appSpecificScore`). */
  appScore (peerId: string): number {
    return this.c.handshakes.appScore(peerId)
  }

  /**
   * A hello was heard. Its DID must be the one of the peer that published it (one Ed25519 key
   * gives both), else it is refused and nothing is recorded. The peer is recorded, dialled if not
   * connected (so it can be invoked even if it was learned only through gossip), and greeted once
   * per connection; the dial and greeting run in the background, at most MAX_PENDING_GREETINGS
   * at a time (beyond, the peer is only recorded: its next hello tries again). Its addresses
   * (cleaned: `cleanAddrs`) replace the ones libp2p's peer store held for it.
   */
  async heardHello (hello: { peerId: string, did: string, addrs: string[] }): Promise<void> {
    const { peerId, did } = hello
    let own: string
    try { own = didFromPeerId(peerId) } catch { throw new BadRequest(`hello from an invalid peer id: '${peerId.slice(0, 80)}'`, { peerId: peerId.slice(0, 80) }) }
    if (did !== own) throw new BadRequest(`hello DID ${did.slice(0, 120)} does not belong to peer ${peerId}`, { peerId, did: did.slice(0, 120) })
    if (peerId === this.self) return
    const addrs = this.cleanAddrs(peerId, hello.addrs)
    await this.c.book.merge(peerId, { did, addrs, lastHelloAt: new Date().toISOString() })
    this.c.handshakes.heard(peerId)
    this.log.debug({ peer: peerId, did }, 'hello heard')
    this.c.onHello?.({ peerId, did })
    const id = peerIdFromString(peerId)
    if (addrs.length > 0) {
      // patch, not merge: the peer's own announcement is its address list now, and repeated
      // hellos must not grow what the dialler tries
      await this.node.peerStore.patch(id, { multiaddrs: addrs.map(a => multiaddr(a).decapsulateCode(P2P_CODE)) })
    }
    if (this.stopping.signal.aborted) return
    if (this.background.size >= MAX_PENDING_GREETINGS) {
      this.log.debug({ peer: peerId }, 'too many greetings under way: recorded, not dialled')
      return
    }
    this.track(this.reachAndGreet(id))
  }

  /** Dials and greetings under way in the background (bounded by MAX_PENDING_GREETINGS). */
  get pendingGreetings (): number { return this.background.size }

  /**
   * Addresses a hello may carry for `peerId`, at most MAX_HELLO_ADDRS of them: multiaddrs (others
   * are dropped) that name no peer, or end in `/p2p/<peerId>` and name no other (a node can only
   * announce itself; a relay address names its relay before it, and is not one dms dials).
   */
  private cleanAddrs (peerId: string, addrs: string[]): string[] {
    const out = new Set<string>()
    for (const a of addrs) {
      if (out.size >= MAX_HELLO_ADDRS) break
      if (typeof a !== 'string' || a.length > MAX_ADDR_LENGTH) continue
      let ma: Multiaddr
      try { ma = multiaddr(a) } catch { continue }
      const components = ma.getComponents()
      const named = components.filter(c => c.code === P2P_CODE)
      if (named.length > 1 || (named.length === 1 && (components.at(-1) !== named[0] || named[0].value !== peerId))) continue
      out.add(withPeer(ma, peerId))
    }
    return [...out]
  }

  private track (p: Promise<void>): void {
    this.background.add(p)
    void p.finally(() => this.background.delete(p))
  }

  private async reachAndGreet (id: PeerId): Promise<void> {
    const peerId = id.toString()
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(BACKGROUND_DIAL_TIMEOUT_MS)])
    try {
      if (this.node.getConnections(id).length === 0) await this.node.dial(id, { signal })
    } catch (err) {
      this.log.debug({ peer: peerId, err }, 'could not dial a peer heard in hello')
      return
    }
    const greet = this.c.greet()
    if (greet === undefined || this.stopping.signal.aborted || !this.c.handshakes.claimGreeting(peerId)) return
    // The greeting is the actor layer's invoke, with its own deadline; this bound (and stop())
    // only keep a misbehaving callback from holding the peer's greeting slot or the shutdown.
    const bound = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(GREET_TIMEOUT_MS)])
    let onAbort: (() => void) | undefined
    try {
      await Promise.race([
        greet(peerId),
        new Promise<never>((_resolve, reject) => {
          onAbort = () => { reject(new Timeout('greeting timed out or the network stopped')) }
          bound.addEventListener('abort', onAbort, { once: true })
        })
      ])
      this.c.handshakes.answered(peerId)
    } catch (err) {
      this.c.handshakes.releaseGreeting(peerId)
      this.log.debug({ peer: peerId, err }, 'greeting failed')
    } finally {
      if (onAbort !== undefined) bound.removeEventListener('abort', onAbort)
    }
  }

  /** A `/public/hello` came from `peerId`, signed by `did`: the other half of the handshake. */
  greetedBy (peerId: string, did: string): void {
    // A repeated greeting is not news: answer it without the base58 work below
    if (this.c.handshakes.hasGreetedUs(peerId)) return
    let own: string
    try { own = didFromPeerId(peerId) } catch { return }
    // Someone other than the node itself (e.g. a user's CLI through its daemon) said hello: an
    // answer is due, but it is not the node handshake.
    if (did !== own || peerId === this.self) return
    // Only news is written: a peer greeting again (or a benchmark calling /public/hello in a
    // loop) costs no database write.
    if (!this.c.handshakes.greetedUs(peerId)) return
    this.c.book.merge(peerId, { did }).catch((err: unknown) => { this.log.warn({ err, peer: peerId }, 'could not record a greeting peer') })
  }

  /**
   * Every address known for a peer, each ending in /p2p/<id>: the peer book, the live peer store,
   * and, when both are empty, a DHT lookup bounded by `signal` and FIND_PEER_TIMEOUT_MS.
   */
  async findAddrs (peer: string, signal: AbortSignal): Promise<string[]> {
    const id = this.parsePeer(peer)
    const out = new Set((await this.c.book.get(peer))?.addrs ?? [])
    try {
      for (const a of (await this.node.peerStore.get(id)).addresses) out.add(withPeer(a.multiaddr, peer))
    } catch { /* not in the peer store */ }
    if (out.size === 0) {
      try {
        const info = await this.node.peerRouting.findPeer(id, { signal: AbortSignal.any([signal, AbortSignal.timeout(FIND_PEER_TIMEOUT_MS)]) })
        for (const ma of info.multiaddrs) out.add(withPeer(ma, peer))
      } catch (err) {
        this.log.debug({ peer, err }, 'DHT lookup found no addresses')
      }
    }
    return [...out]
  }

  /**
   * An open connection to the peer, for the actor transport: an existing one, else a dial to
   * the addresses of the peer book and peer store; if those fail (stale), fresh ones from the DHT.
   */
  async dialPeer (id: PeerId, signal: AbortSignal): Promise<Connection> {
    const open = this.node.getConnections(id).find(c => c.status === 'open')
    if (open !== undefined) return open
    const rec = await this.c.book.get(id.toString())
    const known = (rec?.addrs ?? []).flatMap(a => { try { return [multiaddr(a).decapsulateCode(P2P_CODE)] } catch { return [] } })
    if (known.length > 0) await this.node.peerStore.merge(id, { multiaddrs: known })
    try {
      return await this.node.dial(id, { signal })
    } catch (err) {
      if (signal.aborted) throw err
      const info = await this.node.peerRouting.findPeer(id, { signal: AbortSignal.any([signal, AbortSignal.timeout(FIND_PEER_TIMEOUT_MS)]) }).catch(() => undefined)
      if (info === undefined || info.multiaddrs.length === 0) throw err
      return await this.node.dial(info.multiaddrs.map(ma => multiaddr(withPeer(ma, id.toString()))), { signal })
    }
  }
}
