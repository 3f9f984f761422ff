import { z } from 'zod'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/peers/dht',
  describe: 'The private Kademlia DHT as this node sees it: its mode (server or client) and the peers in its routing table.',
  request: z.object({}),
  response: z.object({ mode: z.enum(['server', 'client']), peers: z.array(z.string()) }),
  needs: ['peers'],
  handler: async ({ peers }) => await peers.dht()
})
