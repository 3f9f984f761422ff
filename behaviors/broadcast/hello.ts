import { z } from 'zod'
import { BadRequest } from '../../src/lib/errors.js'
import { HELLO_TOPIC, MAX_ADDR_LENGTH, MAX_HELLO_ADDRS } from '../../src/network/constants.js'
import { defineBehavior } from '../define.js'

export default defineBehavior({
  path: '/broadcast/hello',
  topic: HELLO_TOPIC,
  // No capability: discovery must work between strangers, who hold no delegation from each
  // other. Nothing is lost by it: the actor layer guarantees that a broadcast envelope was signed
  // by the key of its gossip publisher (the DID↔PeerId binding of one Ed25519 key), and the peer
  // service refuses a DID that is not the PeerId's — so a node can only ever announce itself.
  capability: false,
  describe: 'A node announcing itself on /nunet/hello with its DID and addresses: recorded in the peer book, dialled if not connected, and greeted once (/public/hello).',
  request: z.object({
    did: z.string().min(1).max(256),
    addrs: z.array(z.string().max(MAX_ADDR_LENGTH)).max(MAX_HELLO_ADDRS)
  }),
  response: z.object({}),
  needs: ['peers'],
  // Each node announces at start, when a peer joins the topic and every 30 s: a few per second
  // at most while a swarm forms.
  limits: { perSenderPerSec: 2, burst: 20 },
  // A node may only announce itself: a hello naming another DID is forged, not forwarded.
  gossipCheck: (_s, { did }, from) => did === from.id ? 'accept' : 'reject',
  handler: async ({ peers }, { did, addrs }, call) => {
    if (did !== call.from.id) throw new BadRequest('the hello\'s DID is not the DID that signed it', { did, signer: call.from.id })
    await peers.heardHello({ peerId: call.from.addr.peer, did: call.from.id, addrs })
    return {}
  }
})
