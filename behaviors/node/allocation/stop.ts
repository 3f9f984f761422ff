import { z } from 'zod'
import { AllocationView } from '../../../src/services/provider/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/allocation/stop',
  describe: 'Stop an allocation of this node by id (SIGTERM, SIGKILL after the grace); idempotent on an ended one.',
  request: z.strictObject({ id: z.string(), graceMs: z.number().int().nonnegative().max(300_000).optional() }),
  response: AllocationView,
  needs: ['provider'],
  handler: async ({ provider }, { id, graceMs }) => await provider.stopAllocation(id, { graceMs })
})
