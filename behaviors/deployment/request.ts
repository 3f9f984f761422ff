import { z } from 'zod'
import { BidRequest, DEPLOYMENT_TOPIC } from '../../src/services/orchestrator/index.js'
import { defineBehavior } from '../define.js'

export default defineBehavior({
  path: '/dms/deployment/request',
  topic: DEPLOYMENT_TOPIC,
  describe: 'A bid request heard on /nunet/deployment: for each ensemble node this node can run now (ready, onboarded, executors, free resources and ports, labels, location), a signed bid goes to the orchestrator (/dms/deployment/bid); nothing is reserved until a commit.',
  request: BidRequest,
  response: z.object({}),
  needs: ['deployments'],
  handler: async ({ deployments }, request) => { await deployments.onBidRequest(request); return {} }
})
