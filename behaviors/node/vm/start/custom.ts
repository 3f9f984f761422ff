import { AllocationView, VmStartRequest } from '../../../../src/services/provider/index.js'
import { defineBehavior } from '../../../define.js'

export default defineBehavior({
  path: '/dms/node/vm/start/custom',
  describe: 'Run a command in a VM on this node as a vm allocation (commit, allocate and start in one; DMS\'s path and fields: cmd, vcpus, memory in bytes); replies with the allocation. The VM boots this node\'s guest, or kernel / initrd / rootfs of your own: absolute paths of readable regular files under the node\'s image directories (its guest\'s, DMS_VM_IMAGE_DIRS), the initrd speaking the dms guest protocol, the rootfs a read-only virtio disk; bootArgs are appended to the executor\'s kernel command line (console, earlycon, earlyprintk, 8250.nr_uarts, panic, reboot, init, rdinit and -- refused). BadRequest naming the field otherwise; ExecutorUnavailable where QEMU or the guest is missing.',
  request: VmStartRequest,
  response: AllocationView,
  needs: ['provider'],
  handler: async ({ provider }, request, call) => await provider.startVm(call.invoker, request)
})
