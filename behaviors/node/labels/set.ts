import { z } from 'zod'
import { LabelsSchema } from '../../../src/services/node-state/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/labels/set',
  describe: 'Add or replace node labels (key=value, Kubernetes label syntax) for placement constraints.',
  request: z.object({ labels: LabelsSchema }),
  response: z.object({ labels: LabelsSchema }),
  needs: ['nodeState'],
  handler: async ({ nodeState }, { labels }) => ({ labels: await nodeState.setLabels(labels) })
})
