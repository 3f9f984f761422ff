import { z } from 'zod'
import { AllocationView } from '../../src/services/provider/index.js'
import { defineAllocationBehavior } from '../define.js'

export default defineAllocationBehavior({
  path: '/dms/allocation/restart',
  describe: 'Restart this allocation\'s workload (a running service or task; not counted against its restart policy).',
  request: z.strictObject({}),
  response: AllocationView,
  needs: ['allocation'],
  handler: async ({ allocation }) => await allocation.restart()
})
