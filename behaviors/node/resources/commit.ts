import { z } from 'zod'
import { AllocationSchema } from '../../../src/services/resources/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/resources/commit',
  describe: 'Turn a live reservation into an allocation (idempotent); NotFound or Expired otherwise.',
  request: z.object({ id: z.string() }),
  response: AllocationSchema,
  needs: ['resources'],
  handler: async ({ resources }, { id }) => await resources.commit(id)
})
