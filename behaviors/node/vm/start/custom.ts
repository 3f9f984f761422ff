import { AllocationView, VmStartRequest } from '../../../../src/services/provider/index.js'
import { defineBehavior } from '../../../define.js'

export default defineBehavior({
  path: '/dms/node/vm/start/custom',
  describe: 'Run a command in a VM on this node as a vm allocation (commit, allocate and start in one; DMS\'s path and fields: cmd, vcpus, memory in bytes); replies with the allocation. The VM boots this node\'s guest: kernel, initrd, rootfs and bootArgs of your own are refused (BadRequest). ExecutorUnavailable where QEMU or the guest is missing.',
  request: VmStartRequest,
  response: AllocationView,
  needs: ['provider'],
  handler: async ({ provider }, request, call) => await provider.startVm(call.invoker, request)
})
