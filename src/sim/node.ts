import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import broadcastHello from '../../behaviors/broadcast/hello.js'
import publicHello from '../../behaviors/public/hello.js'
import type { AnyBehavior } from '../actor/behavior.js'
import { ActorSystem } from '../actor/system.js'
import { didFromPeerId } from '../identity/did.js'
import { identityFromPrivateKey, type Identity } from '../identity/identity.js'
import { BadRequest } from '../lib/errors.js'
import { silentLogger } from '../lib/log.js'
import { HELLO_TOPIC, MAX_PENDING_GREETINGS } from '../network/constants.js'
import { Handshakes, HelloAnnouncer } from '../network/hello.js'
import { PeerBook } from '../network/peer-book.js'
import type { PeerInfo, PeerService } from '../network/peer-service.js'
import type { NodeInfo } from '../node/info.js'
import { openMemoryDb } from './memory-db.js'
import type { SimEndpoint } from './network.js'

/** The hello's envelope lifetime, as the daemon uses (create-node.ts). */
const HELLO_LIFETIME_MS = 60_000

/** An Ed25519 identity from 32 seeded bytes: a run's keys (and so its PeerIds) follow its seed. */
export async function seededIdentity (random: () => number): Promise<Identity> {
  const seed = new Uint8Array(32)
  for (let i = 0; i < seed.length; i++) seed[i] = Math.floor(random() * 256)
  return identityFromPrivateKey(await generateKeyPairFromSeed('Ed25519', seed))
}

/**
 * The peer service of a simulated node: the hello half of src/network/peers.ts (`heardHello`,
 * `greetedBy`) over the real PeerBook and Handshakes, without libp2p. The same checks and the
 * same order: the DID must be the publisher's, the peer is recorded, then greeted once (at most
 * MAX_PENDING_GREETINGS at a time). There are no connections to dial: every peer is reachable
 * through the simulated transport, and `connected` is the gossip mesh.
 */
export class SimPeers implements PeerService {
  private greetings = 0
  /** Called when a hello from another peer was recorded (the simulator's "known by" clock). */
  onHello?: (peerId: string) => void

  constructor (
    private readonly self: string,
    readonly book: PeerBook,
    readonly handshakes: Handshakes,
    private readonly greetFn: () => ((peerId: string) => Promise<void>) | undefined
  ) {}

  async list (): Promise<PeerInfo[]> {
    return (await this.book.all()).map(r => ({ id: r.id, ...(r.did !== undefined ? { did: r.did } : {}), addrs: r.addrs, connected: false }))
  }

  async ping (): Promise<number> { throw new BadRequest('ping is not simulated') }
  async connect (): Promise<{ id: string, connected: boolean }> { throw new BadRequest('connect is not simulated') }
  async dht (): Promise<{ mode: 'server' | 'client', peers: string[] }> { return { mode: 'client', peers: [] } }
  async scores (): Promise<Record<string, Record<string, number>>> { return {} }

  async heardHello (hello: { peerId: string, did: string, addrs: string[] }): Promise<void> {
    const { peerId, did } = hello
    let own: string
    try { own = didFromPeerId(peerId) } catch { throw new BadRequest(`hello from an invalid peer id: '${peerId.slice(0, 80)}'`) }
    if (did !== own) throw new BadRequest(`hello DID ${did.slice(0, 120)} does not belong to peer ${peerId}`)
    if (peerId === this.self) return
    await this.book.merge(peerId, { did, addrs: hello.addrs, lastHelloAt: new Date().toISOString() })
    this.handshakes.heard(peerId)
    this.onHello?.(peerId)
    const greet = this.greetFn()
    if (greet === undefined || this.greetings >= MAX_PENDING_GREETINGS || !this.handshakes.claimGreeting(peerId)) return
    this.greetings++
    greet(peerId)
      .then(() => { this.handshakes.answered(peerId) }, () => { this.handshakes.releaseGreeting(peerId) })
      .finally(() => { this.greetings-- })
  }

  greetedBy (peerId: string, did: string): void {
    if (this.handshakes.hasGreetedUs(peerId)) return
    let own: string
    try { own = didFromPeerId(peerId) } catch { return }
    if (did !== own || peerId === this.self) return
    if (!this.handshakes.greetedUs(peerId)) return
    this.book.merge(peerId, { did }).catch(() => {})
  }
}

export interface SimNodeOptions {
  intervalMs: number
  /** K of the rate-scaled hello; Infinity = today's every-interval hello (the baseline). */
  peersPerInterval: number
  /** Peer book bound (memory: 10,000 books of 10,000 entries do not fit in one process). */
  peerBookMax: number
  /** The peer count the announcer paces itself by; absent: the peer book's size. */
  knownPeers?: () => number
  signAll: boolean
}

/**
 * One simulated node: the real actor system with the real hello behaviours (`/broadcast/hello`,
 * `/public/hello`), the real HelloAnnouncer (pacing, dead-node removal) and PeerBook (in memory),
 * over a simulated endpoint. Wired as create-node.ts and network/index.ts wire a daemon.
 */
export class SimNode {
  readonly system: ActorSystem
  readonly announcer: HelloAnnouncer
  readonly peers: SimPeers

  private constructor (readonly identity: Identity, readonly endpoint: SimEndpoint, book: PeerBook, opts: SimNodeOptions) {
    const handshakes = new Handshakes()
    // set just below: the greeting is the actor system's invoke, as in create-node.ts
    let announcer: HelloAnnouncer | undefined
    this.peers = new SimPeers(identity.peerId, book, handshakes, () => announcer?.greet)
    const node: NodeInfo = { did: identity.did, peerId: identity.peerId, version: 'sim', startedAt: Date.now(), addrs: () => [`/ip4/10.0.0.1/tcp/9000/p2p/${identity.peerId}`] }
    this.system = new ActorSystem({
      identity,
      transport: endpoint,
      authorizer: { authorize: async () => {} },
      behaviors: [broadcastHello, publicHello] as unknown as readonly AnyBehavior[],
      services: { node, peers: this.peers },
      signAllEnvelopes: opts.signAll
    })
    announcer = new HelloAnnouncer(endpoint, opts.intervalMs, silentLogger(), {
      peersPerInterval: opts.peersPerInterval,
      knownPeers: opts.knownPeers ?? (async () => await book.size()),
      forgetSilent: async (cutoff) => { await book.forgetSilent(cutoff) }
    })
    this.announcer = announcer
    announcer.setCallbacks({
      announce: async () => {
        await this.system.root.publish(HELLO_TOPIC, '/broadcast/hello', { did: identity.did, addrs: node.addrs() }, { timeout: HELLO_LIFETIME_MS })
      },
      greet: async (peerId) => { await this.system.root.invoke(peerId, '/public/hello', {}, { timeout: HELLO_LIFETIME_MS }) }
    })
  }

  static async create (identity: Identity, endpoint: SimEndpoint, opts: SimNodeOptions): Promise<SimNode> {
    const db = await openMemoryDb()
    const book = new PeerBook(db, { maxEntries: opts.peerBookMax }, {
      connected: () => [...endpoint.mesh].map(i => endpoint.peerIdOf(i)),
      onEvict: (id) => { handshakesOf.get(book)?.forget(id) }
    })
    const n = new SimNode(identity, endpoint, book, opts)
    handshakesOf.set(book, n.peers.handshakes)
    return n
  }

  get book (): PeerBook { return this.peers.book }

  /** A warm start: the node already knows these peers (recorded and greeted both ways). */
  async know (others: Array<{ peerId: string, did: string }>): Promise<void> {
    const at = new Date().toISOString()
    for (const o of others) {
      if (o.peerId === this.identity.peerId) continue
      await this.book.merge(o.peerId, { did: o.did, addrs: [`/ip4/10.0.0.1/tcp/9000/p2p/${o.peerId}`], lastHelloAt: at })
      const h = this.peers.handshakes
      h.heard(o.peerId)
      h.claimGreeting(o.peerId)
      h.answered(o.peerId)
      h.greetedUs(o.peerId)
    }
  }

  start (announce: boolean): void { this.announcer.start({ announce }) }

  async stop (): Promise<void> {
    await this.announcer.stop()
    this.system.stop()
  }
}

const handshakesOf = new WeakMap<PeerBook, Handshakes>()
