import { z } from 'zod'
import { PortRequestSchema } from '../../../src/services/ports/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/ports/reserve',
  describe: 'Lease ports of the configured range to an allocation id: the listed ones and `dynamic` more, all or none (PortUnavailable names the port).',
  request: PortRequestSchema.extend({ allocationId: z.string() }).strict(),
  response: z.object({ ports: z.array(z.number().int()) }),
  needs: ['ports'],
  handler: async ({ ports }, { allocationId, ...request }) => ({ ports: await ports.reserve(allocationId, request) })
})
