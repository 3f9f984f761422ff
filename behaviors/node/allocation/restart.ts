import { z } from 'zod'
import { AllocationView } from '../../../src/services/provider/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/allocation/restart',
  describe: 'Restart a running allocation of this node by id (not counted against its restart policy).',
  request: z.strictObject({ id: z.string() }),
  response: AllocationView,
  needs: ['provider'],
  handler: async ({ provider }, { id }) => await provider.restartAllocation(id)
})
