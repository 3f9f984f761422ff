import { z } from 'zod'
import { AllocationView } from '../../src/services/provider/index.js'
import { defineAllocationBehavior, pollSignal } from '../define.js'

export default defineAllocationBehavior({
  path: '/dms/allocation/status',
  describe: 'This allocation: status, reason, transitions, exit code, restarts, health. With wait, answers once it ended (completed, failed or stopped, and its resources and ports given back) or just before the caller\'s deadline.',
  request: z.strictObject({ wait: z.boolean().optional() }),
  response: AllocationView,
  needs: ['allocation'],
  readOnly: true,
  handler: async ({ allocation }, { wait }, call) => wait === true ? await allocation.waitForEnd(pollSignal(call)) : allocation.view()
})

