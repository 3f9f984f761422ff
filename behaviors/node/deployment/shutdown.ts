import { z } from 'zod'
import { DeploymentView } from '../../../src/services/orchestrator/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/deployment/shutdown',
  describe: 'Shut a deployment down: every allocation is stopped and everything is released on every provider; answers once that is done (status Completed).',
  request: z.strictObject({ id: z.string() }),
  response: DeploymentView,
  needs: ['deployments'],
  handler: async ({ deployments }, { id }) => await deployments.shutdown(id)
})
