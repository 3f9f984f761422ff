import { z } from 'zod'
import { DeploymentView } from '../../../src/services/orchestrator/index.js'
import { defineBehavior, pollSignal } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/deployment/status',
  describe: 'One deployment: status (Preparing, Committing, Provisioning, Running, ShuttingDown, Completed, Failed), reason, transitions and allocations. With after (a transition count), a long poll: answers once there is a later transition, it ended, or just before the caller\'s deadline.',
  request: z.strictObject({ id: z.string(), after: z.number().int().nonnegative().optional() }),
  response: DeploymentView,
  needs: ['deployments'],
  readOnly: true,
  handler: async ({ deployments }, { id, after }, call) => await deployments.status(id, after === undefined ? {} : { after, signal: pollSignal(call) })
})
