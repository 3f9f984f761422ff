import { BidRequest, DirectReply } from '../../../src/services/orchestrator/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/deployment/request/direct',
  describe: 'A bid request asked of this node directly (a pinned node, or an orchestrator asking why no bid came): signed bids for the nodes it can run now, and for each other node the reason it cannot.',
  request: BidRequest,
  response: DirectReply,
  needs: ['deployments'],
  readOnly: true,
  handler: async ({ deployments }, request) => await deployments.answer(request)
})
