import { z } from 'zod'
import { AllocationView } from '../../src/services/provider/index.js'
import { defineAllocationBehavior } from '../define.js'

export default defineAllocationBehavior({
  path: '/dms/allocation/stop',
  describe: 'Stop this allocation (SIGTERM to its whole process group or container, SIGKILL after the grace); idempotent.',
  request: z.strictObject({ graceMs: z.number().int().nonnegative().max(300_000).optional() }),
  response: AllocationView,
  needs: ['allocation'],
  handler: async ({ allocation }, { graceMs }) => await allocation.stop({ graceMs })
})
