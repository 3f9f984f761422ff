/**
 * The peer-facing service behaviours use (`needs: ['peers']`). Implemented in src/network/ over
 * the libp2p host and the persisted peer book; behaviours never see libp2p itself.
 */
export interface PeerInfo {
  id: string
  did?: string
  addrs: string[]
  connected: boolean
  /** ISO-8601 time of the last hello heard from this peer. */
  lastHelloAt?: string
}

export interface PeerService {
  list: () => Promise<PeerInfo[]>
  /** Round-trip time in ms (libp2p ping). Refuses to ping this node itself. */
  ping: (peer: string, signal: AbortSignal) => Promise<number>
  /** Dials a multiaddr (with /p2p/<id>). */
  connect: (address: string, signal: AbortSignal) => Promise<{ id: string, connected: boolean }>
  dht: () => Promise<{ mode: 'server' | 'client', peers: string[] }>
  scores: () => Promise<Record<string, Record<string, number>>>
  /** A `/broadcast/hello` was heard: record the peer and complete the handshake. */
  heardHello: (hello: { peerId: string, did: string, addrs: string[] }) => Promise<void>
  /** A `/public/hello` invocation arrived from this peer (the other half of the handshake). */
  greetedBy: (peerId: string, did: string) => void
}
