import '../lib/polyfill.js'
import { noise } from '@chainsafe/libp2p-noise'
import { gossipsub, StrictSign } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import type { PeerInfo as Libp2pPeerInfo } from '@libp2p/interface'
import { kadDHT, passthroughMapper, removePublicAddressesMapper } from '@libp2p/kad-dht'
import { mdns } from '@libp2p/mdns'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { peerIdFromString } from '@libp2p/peer-id'
import { createLibp2p } from 'libp2p'
import type { Identity } from '../identity/identity.js'
import { InvalidConfig, InvalidState, NotRunning } from '../lib/errors.js'
import type { Logger } from '../lib/log.js'
import type { Db } from '../store/db.js'
import type { Transport } from '../actor/types.js'
import { createActorTransport, type ActorTransport } from './actor-transport.js'
import { BootstrapKeeper } from './bootstrap.js'
import {
  BACKGROUND_DIAL_TIMEOUT_MS, DEFAULT_DHT_PROTOCOL, DHT_INITIAL_SELF_QUERY_MS, DEFAULT_HELLO_INTERVAL_MS, DEFAULT_LISTEN,
  DEFAULT_MAX_FRAME_BYTES, DISCOVERY_DIAL_BELOW_CONNECTIONS, GOSSIP_RPC_OVERHEAD_BYTES, HELLO_TOPIC,
  PING_STREAMS_PER_CONNECTION, YAMUX_MAX_EARLY_STREAMS
} from './constants.js'
import { SCORE_THRESHOLDS, peerScoreParams } from './gossip-score.js'
import { Handshakes, HelloAnnouncer, type HelloCallbacks } from './hello.js'
import { Liveness } from './liveness.js'
import { PeerBook } from './peer-book.js'
import type { PeerService } from './peer-service.js'
import { Peers, peerIdOf, type Host } from './peers.js'

export type { HelloCallbacks } from './hello.js'
export type { PeerInfo, PeerService } from './peer-service.js'
export { ACTOR_PROTOCOL, HELLO_TOPIC } from './constants.js'

/** Everything optional; the defaults are a node of the public network on port 9000. */
export interface NetworkInit {
  /** libp2p listen multiaddrs (default `/ip4/0.0.0.0/tcp/9000`; tests use `/ip4/127.0.0.1/tcp/0`). */
  listen?: string[]
  /** Peers to stay connected to, each a multiaddr ending in `/p2p/<peer id>`. */
  bootstrap?: string[]
  /** LAN discovery by multicast DNS (default true). */
  mdns?: boolean
  /** Largest actor frame sent or accepted, in bytes (default 4 MiB). */
  maxFrameBytes?: number
  /** Period of the hello broadcast besides the event-driven ones (default 30 s). */
  helloIntervalMs?: number
  /** Kademlia protocol id (default `/nunet/kad/1.0.0`, a private DHT). */
  dhtProtocol?: string
  /**
   * Which addresses of peers the DHT keeps: `private` (default; loopback and LAN addresses — a
   * private DHT on loopback/LAN stays empty otherwise, STACK.md) or `all` (nodes on the Internet).
   */
  dhtAddresses?: 'private' | 'all'
}

export interface NetworkComponents {
  /** The node's key: its libp2p identity (PeerId) and DID. */
  identity: Identity
  /** The node's database; the network keeps its peer book in sublevel `peers`. */
  db: Db
  log: Logger
}

/** The actor transport, plus a disconnect signal and a diagnostic. */
export interface NetworkTransport extends Transport {
  /** Open actor streams to a peer (normally 1 while connected). */
  actorStreams: (peer: string) => number
  /**
   * Calls `listener` when the last connection to a peer closes (e.g. to fail invocations waiting
   * on it at once rather than at their deadline). Returns the unsubscribe function.
   */
  onPeerDisconnect: (listener: (peer: string) => void) => () => void
}

export interface Network {
  readonly peerId: string
  /** The libp2p actor transport: give it to the actor system (set its receiver before start). */
  readonly transport: NetworkTransport
  /** The `peers` service of behaviours. */
  readonly peers: PeerService
  /** Listening multiaddrs, each ending in `/p2p/<peerId>` (empty before start). */
  addrs: () => string[]
  /**
   * Installs the hello callbacks (see `HelloCallbacks`): call before `start()`; without them the
   * node neither announces itself nor greets the peers it hears.
   */
  setHelloCallbacks: (callbacks: HelloCallbacks) => void
  /**
   * Addresses known for a peer (peer book, peer store, then a bounded DHT lookup), each ending
   * in `/p2p/<id>`. The transport uses the same lookup when it must dial.
   */
  findAddrs: (peerId: string, signal: AbortSignal) => Promise<string[]>
  /** Listens, registers the actor protocol, subscribes to `/nunet/hello`, starts bootstrap and hello. */
  start: () => Promise<void>
  /** Stops hello, bootstrap, the transport and libp2p, in that order; leaves no timer behind. */
  stop: () => Promise<void>
  /**
   * Calls `listener` on what an operator watches (events, metrics): a peer's first connection
   * opened or its last one closed, a valid hello heard. Returns the unsubscribe function.
   */
  onPeerEvent: (listener: (e: NetworkEvent) => void) => () => void
  /** libp2p's connections and open streams by protocol, counted now (cheap: in-memory lists). */
  connectionStats: () => ConnectionStats
}

export type NetworkEvent =
  | { type: 'peer.connected' | 'peer.disconnected', peer: string }
  | { type: 'hello.heard', peer: string, did: string }

export interface ConnectionStats {
  connections: { inbound: number, outbound: number }
  /** Open streams by protocol id. */
  streams: Record<string, number>
}

type Status = 'created' | 'starting' | 'running' | 'stopping' | 'stopped'

/**
 * Builds the libp2p host (TCP, Noise, Yamux, identify, ping, private Kademlia DHT, gossipsub with
 * StrictSign, optional mDNS), the actor transport over it, the peer book and the hello logic.
 * Nothing listens until `start()`.
 */
export async function createNetwork (init: NetworkInit = {}, components: NetworkComponents): Promise<Network> {
  const { identity, db, log } = components
  const maxFrameBytes = init.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES
  if (!Number.isSafeInteger(maxFrameBytes) || maxFrameBytes < 1024) throw new InvalidConfig(`maxFrameBytes must be an integer ≥ 1024, got ${maxFrameBytes}`)
  const handshakes = new Handshakes()
  const readBufferBytes = Math.max(4 * 1024 * 1024, 2 * maxFrameBytes + GOSSIP_RPC_OVERHEAD_BYTES)

  /** Listening addresses change rarely (listen, observed address); behaviours ask on every call. */
  let addrCache: string[] | undefined
  const node: Host = await createLibp2p({
    privateKey: identity.privateKey,
    start: false,
    addresses: { listen: init.listen ?? DEFAULT_LISTEN },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux({
      maxEarlyStreams: YAMUX_MAX_EARLY_STREAMS,
      // A paused or not-yet-read stream buffers up to this much before being reset: room for a
      // full frame arriving before the inbound handler attaches its reader. The receive window
      // (yamux's default grows to 16 MiB) is capped at the same size, so a sender can never
      // overrun a stream the actor transport paused to let other peers' frames go first.
      streamOptions: { maxReadBufferLength: readBufferBytes, maxStreamWindowSize: readBufferBytes }
    })],
    peerDiscovery: init.mdns === false ? [] : [mdns()],
    // Replaced by liveness.ts: libp2p's monitor reset busy connections whose ping was slow.
    connectionMonitor: { enabled: false },
    services: {
      identify: identify(),
      ping: ping({ maxOutboundStreams: PING_STREAMS_PER_CONNECTION, maxInboundStreams: PING_STREAMS_PER_CONNECTION }),
      dht: kadDHT({
        protocol: init.dhtProtocol ?? DEFAULT_DHT_PROTOCOL,
        clientMode: false,
        initialQuerySelfInterval: DHT_INITIAL_SELF_QUERY_MS,
        peerInfoMapper: init.dhtAddresses === 'all' ? passthroughMapper : removePublicAddressesMapper
      }),
      pubsub: gossipsub({
        allowPublishToZeroTopicPeers: true,
        globalSignaturePolicy: StrictSign,
        emitSelf: false,
        maxInboundDataLength: maxFrameBytes + GOSSIP_RPC_OVERHEAD_BYTES,
        // P4 (rejected messages) per topic as the transport subscribes, the hello handshake as
        // the application score, loopback exempt from IP colocation (gossip-score.ts)
        scoreParams: peerScoreParams((peerId: string) => handshakes.appScore(peerId)),
        scoreThresholds: SCORE_THRESHOLDS
      })
    }
  })

  const book = new PeerBook(db, {}, {
    connected: () => node.getPeers().map(String),
    onEvict: (id) => {
      handshakes.forget(id)
      node.peerStore.delete(peerIdFromString(id)).catch((err: unknown) => { log.debug({ err, peer: id }, 'could not forget an evicted peer') })
    }
  })
  // rate-scaled hello and dead-node removal (hello.ts, specs/membership.md)
  const announcer = new HelloAnnouncer(node.services.pubsub, init.helloIntervalMs ?? DEFAULT_HELLO_INTERVAL_MS, log.child({ part: 'hello' }), {
    knownPeers: async () => await book.size(),
    forgetSilent: async (cutoff) => { await book.forgetSilent(cutoff) }
  })
  const listeners = new Set<(e: NetworkEvent) => void>()
  const tell = (e: NetworkEvent): void => {
    for (const l of listeners) {
      try { l(e) } catch (err) { log.warn({ err, event: e.type }, 'a network event listener failed') }
    }
  }
  const peers = new Peers({ node, book, handshakes, greet: () => announcer.greet, onHello: (h) => { tell({ type: 'hello.heard', peer: h.peerId, did: h.did }) }, log: log.child({ part: 'peers' }) })
  const onConnect = (evt: CustomEvent<{ toString: () => string }>): void => { tell({ type: 'peer.connected', peer: evt.detail.toString() }) }
  const onDisconnect = (evt: CustomEvent<{ toString: () => string }>): void => { tell({ type: 'peer.disconnected', peer: evt.detail.toString() }) }
  const transport: ActorTransport = createActorTransport({ maxFrameBytes }, {
    node,
    connect: async (peer, signal) => await peers.dialPeer(peer, signal),
    log: log.child({ part: 'actor-transport' })
  })
  const liveness = new Liveness({}, { node, lastHeard: (peer) => transport.lastHeard(peer), log: log.child({ part: 'liveness' }) })
  const bootstrap = new BootstrapKeeper(init.bootstrap ?? [], node, log.child({ part: 'bootstrap' }))
  const peerId = identity.peerId
  let status: Status = 'created'
  /** Aborts the background dials of discovered peers at stop. */
  let stopping = new AbortController()

  // libp2p 3 has no auto-dialler: a peer found on the LAN (mDNS) or by the DHT is only an entry
  // in the peer store until someone dials it. Dial while the node has few connections.
  const discoveryDials = new Set<Promise<unknown>>()
  const onDiscovery = (evt: CustomEvent<Libp2pPeerInfo>): void => {
    const id = evt.detail.id
    if (status !== 'running' || id.equals(node.peerId) || node.getConnections(id).length > 0) return
    if (node.getConnections().length >= DISCOVERY_DIAL_BELOW_CONNECTIONS) return
    const p = node.dial(id, { signal: AbortSignal.any([stopping.signal, AbortSignal.timeout(BACKGROUND_DIAL_TIMEOUT_MS)]) })
      .catch((err: unknown) => { log.debug({ peer: id.toString(), err }, 'could not dial a discovered peer') })
      .finally(() => discoveryDials.delete(p))
    discoveryDials.add(p)
  }

  const forgetAddrs = (): void => { addrCache = undefined }

  /** Stops whatever started, in reverse order; each part's stop is a no-op when it never started. */
  const teardown = async (): Promise<void> => {
    stopping.abort()
    node.removeEventListener('peer:discovery', onDiscovery)
    node.removeEventListener('self:peer:update', forgetAddrs)
    node.removeEventListener('peer:connect', onConnect)
    node.removeEventListener('peer:disconnect', onDisconnect)
    addrCache = undefined
    await announcer.stop()
    await bootstrap.stop()
    await peers.stop()
    await liveness.stop()
    await transport.stop()
    await Promise.allSettled([...discoveryDials])
    await node.stop()
  }

  return {
    peerId,
    transport,
    peers,
    addrs: () => {
      if (addrCache !== undefined) return addrCache
      const addrs = node.getMultiaddrs().map(ma => peerIdOf(ma) === undefined ? `${ma.toString()}/p2p/${peerId}` : ma.toString())
      if (status === 'running') addrCache = addrs
      return addrs
    },
    setHelloCallbacks: (callbacks) => { announcer.setCallbacks(callbacks) },
    onPeerEvent: (listener) => {
      listeners.add(listener)
      return () => { listeners.delete(listener) }
    },
    connectionStats: () => {
      const stats: ConnectionStats = { connections: { inbound: 0, outbound: 0 }, streams: {} }
      for (const c of node.getConnections()) {
        stats.connections[c.direction]++
        for (const s of c.streams) {
          // a protocol id is chosen by this node's own handlers or dials: a bounded set
          const p = s.protocol ?? 'negotiating'
          stats.streams[p] = (stats.streams[p] ?? 0) + 1
        }
      }
      return stats
    },
    findAddrs: async (id, signal) => {
      if (status !== 'running') throw new NotRunning('the network is not running')
      return await peers.findAddrs(id, signal)
    },
    async start () {
      if (status !== 'created') throw new InvalidState(`the network cannot start from status '${status}'`)
      status = 'starting'
      stopping = new AbortController()
      try {
        await node.start()
        peers.start()
        await transport.start()
        liveness.start()
        // The network takes part in hello by itself: it must hear hellos and relay them.
        transport.subscribe(HELLO_TOPIC)
        node.addEventListener('peer:discovery', onDiscovery)
        node.addEventListener('self:peer:update', forgetAddrs)
        node.addEventListener('peer:connect', onConnect)
        node.addEventListener('peer:disconnect', onDisconnect)
      } catch (err) {
        // e.g. the listen port is taken: leave nothing running behind.
        await teardown().catch(() => {})
        status = 'stopped'
        throw err
      }
      status = 'running'
      bootstrap.start()
      announcer.start()
      log.info({ peerId, addrs: node.getMultiaddrs().map(String) }, 'network started')
    },
    async stop () {
      if (status === 'stopped' || status === 'created') { status = 'stopped'; return }
      if (status !== 'running') throw new InvalidState(`the network cannot stop from status '${status}'`)
      status = 'stopping'
      await teardown()
      status = 'stopped'
      log.info({ peerId }, 'network stopped')
    }
  }
}
