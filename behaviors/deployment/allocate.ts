import { AllocateReply, AllocateRequest } from '../../src/services/provider/index.js'
import { defineBehavior } from '../define.js'

export default defineBehavior({
  path: '/dms/deployment/allocate',
  describe: 'Turn a commit into allocation actors, one per allocation (spec without resources and ports: the commit fixed them); replies with their handles. Start each with /dms/allocation/start.',
  request: AllocateRequest,
  response: AllocateReply,
  needs: ['provider'],
  handler: async ({ provider }, request, call) => await provider.allocate(call.invoker, request)
})
