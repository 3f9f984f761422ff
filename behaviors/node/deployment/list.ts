import { z } from 'zod'
import { DeploymentView } from '../../../src/services/orchestrator/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/deployment/list',
  describe: 'The deployments this node orchestrates (or did), oldest first, each with its status and allocations.',
  request: z.strictObject({}),
  response: z.object({ deployments: z.array(DeploymentView) }),
  needs: ['deployments'],
  readOnly: true,
  handler: ({ deployments }) => ({ deployments: deployments.list() })
})
