import { z } from 'zod'
import { AllocationView } from '../../src/services/provider/index.js'
import { defineAllocationBehavior } from '../define.js'

export default defineAllocationBehavior({
  path: '/dms/allocation/start',
  describe: 'Start this allocation: pending → starting → running. A workload that cannot start (a command that does not exist, a port in use, a missing image) fails the allocation and answers the typed error.',
  request: z.strictObject({}),
  response: AllocationView,
  needs: ['allocation'],
  handler: async ({ allocation }) => await allocation.start()
})
