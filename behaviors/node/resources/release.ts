import { z } from 'zod'
import { ResourceVectorSchema } from '../../../src/services/resources/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/resources/release',
  describe: 'Free a reservation or an allocation by id (idempotent: an unknown id answers released "none").',
  request: z.object({ id: z.string() }),
  response: z.object({ released: z.enum(['reservation', 'allocation', 'none']), resources: ResourceVectorSchema.optional() }),
  needs: ['resources'],
  handler: async ({ resources }, { id }) => await resources.release(id)
})
