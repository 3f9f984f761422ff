import { z } from 'zod'

/** A peer as `/dms/node/peers/list` reports it (mirrors `PeerInfo` of src/network/peer-service.ts). */
export const PeerInfoSchema = z.object({
  id: z.string(),
  did: z.string().optional(),
  addrs: z.array(z.string()),
  connected: z.boolean(),
  /** ISO-8601 time of the last hello heard from this peer. */
  lastHelloAt: z.string().optional()
})

/** A libp2p PeerId in its string form (base58btc `12D3Koo…` for Ed25519 keys). */
export const PeerIdSchema = z.string().min(1).max(128)

/** A multiaddr that names its peer, e.g. `/ip4/10.0.0.2/tcp/9000/p2p/12D3Koo…`. */
export const PeerAddressSchema = z.string().min(1).max(1024).startsWith('/')
