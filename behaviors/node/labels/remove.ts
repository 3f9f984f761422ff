import { z } from 'zod'
import { LabelsSchema } from '../../../src/services/node-state/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/labels/remove',
  describe: 'Remove node labels by key (keys not present are ignored).',
  request: z.object({ keys: z.array(z.string()).min(1) }),
  response: z.object({ labels: LabelsSchema }),
  needs: ['nodeState'],
  handler: async ({ nodeState }, { keys }) => ({ labels: await nodeState.removeLabels(keys) })
})
