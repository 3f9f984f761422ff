import { z } from 'zod'
import { defineBehavior } from '../../define.js'
import { PeerInfoSchema } from './schemas.js'

export default defineBehavior({
  path: '/dms/node/peers/list',
  describe: 'Peers this node knows (peer book and live peer store), with their addresses, whether they are connected, and the DIDs learned from hello.',
  request: z.object({}),
  response: z.object({ peers: z.array(PeerInfoSchema) }),
  needs: ['peers'],
  handler: async ({ peers }) => ({ peers: await peers.list() })
})
