import { z } from 'zod'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/peers/self',
  describe: 'This node\'s own identity on the network: PeerId, DID and listening addresses (each ending in /p2p/<peer id>).',
  request: z.object({}),
  response: z.object({ id: z.string(), did: z.string(), addrs: z.array(z.string()) }),
  needs: ['node'],
  handler: ({ node }) => ({ id: node.peerId, did: node.did, addrs: node.addrs() })
})
