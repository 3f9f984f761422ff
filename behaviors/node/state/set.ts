import { z } from 'zod'
import { NodeStateSchema } from '../../../src/services/node-state/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/state/set',
  describe: 'Set the node state: ready, standby (no new work), stopping (finish what runs, then stopped) or stopped.',
  request: z.object({ state: NodeStateSchema }),
  response: z.object({ state: NodeStateSchema, previous: NodeStateSchema, since: z.number(), labels: z.record(z.string(), z.string()) }),
  needs: ['nodeState'],
  handler: async ({ nodeState }, { state }) => await nodeState.set(state)
})
