import { z } from 'zod'
import { defineBehavior } from '../define.js'

export default defineBehavior({
  path: '/public/hello',
  // Under /public: no capability. Two nodes that just met through the hello broadcast have no
  // delegation between them yet; the greeting is how they get acquainted.
  describe: 'The greeting half of the hello handshake: answers with this node\'s DID and PeerId and records that the caller greeted it (which raises the caller\'s gossipsub score). Needs no capability.',
  request: z.object({}),
  response: z.object({ did: z.string(), peerId: z.string() }),
  needs: ['node', 'peers'],
  // No limit of its own beyond the per-sender bucket every envelope passes: the handler is O(1)
  // in memory (a repeated greeting writes nothing), and it is the behaviour a caller uses to
  // measure a node's round trip.
  handler: ({ node, peers }, _request, call) => {
    peers.greetedBy(call.from.addr.peer, call.from.id)
    return { did: node.did, peerId: node.peerId }
  }
})
