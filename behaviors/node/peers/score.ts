import { z } from 'zod'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/peers/score',
  describe: 'Gossipsub score of each peer: the total `score`, the hello handshake\'s `appScore` (1 mutual, 0.5 one-sided, 0 none), the `behaviourPenalty`, `invalidMessages` (its gossip this node\'s validators rejected, decaying over minutes), and `topics`, how many of this node\'s topics the peer subscribes to.',
  request: z.object({}),
  response: z.object({ scores: z.record(z.string(), z.record(z.string(), z.number())) }),
  needs: ['peers'],
  handler: async ({ peers }) => ({ scores: await peers.scores() })
})
