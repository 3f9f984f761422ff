import { AllocationView, ContainerStartRequest } from '../../../src/services/provider/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/container/start',
  describe: 'Run an image on this node as a docker allocation (commit, allocate and start in one); replies with the allocation. ExecutorUnavailable when no Docker engine answers here.',
  request: ContainerStartRequest,
  response: AllocationView,
  needs: ['provider'],
  handler: async ({ provider }, request, call) => await provider.startContainer(call.invoker, request)
})
