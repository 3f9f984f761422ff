import { z } from 'zod'
import { defineBehavior } from '../../define.js'
import { PeerIdSchema } from './schemas.js'

export default defineBehavior({
  path: '/dms/node/peers/ping',
  describe: 'Round-trip time to a peer by libp2p ping, dialling it if needed. Pinging this node itself is a BadRequest; an unreachable peer is Unreachable, a late one Timeout.',
  request: z.object({ peer: PeerIdSchema }),
  response: z.object({ rttMs: z.number() }),
  needs: ['peers'],
  handler: async ({ peers }, { peer }, call) => ({ rttMs: await peers.ping(peer, call.signal) })
})
