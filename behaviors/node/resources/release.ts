import { z } from 'zod'
import { ResourceVectorSchema } from '../../../src/services/resources/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/resources/release',
  describe: 'Free a reservation or an allocation by id (idempotent: an unknown id answers released "none"). With `ports: true` the id\'s port leases end too, in the same write: both or neither.',
  request: z.object({ id: z.string(), ports: z.boolean().default(false) }),
  response: z.object({ released: z.enum(['reservation', 'allocation', 'none']), resources: ResourceVectorSchema.optional() }),
  needs: ['resources', 'ports'],
  handler: async ({ resources, ports: portTable }, { id, ports }) => ports ? await resources.releaseWithPorts(id, portTable) : await resources.release(id)
})
