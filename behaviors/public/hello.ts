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
  // Strangers may call it: bound what one sender can make this node do.
  limits: { perSenderPerSec: 2, burst: 10 },
  handler: ({ node, peers }, _request, call) => {
    peers.greetedBy(call.from.addr.peer, call.from.id)
    return { did: node.did, peerId: node.peerId }
  }
})
