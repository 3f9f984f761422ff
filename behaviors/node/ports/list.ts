import { z } from 'zod'
import { PortLeaseSchema } from '../../../src/services/ports/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/ports/list',
  describe: 'The configured port range and every lease in it (port, allocation id, since).',
  request: z.object({}).strict(),
  response: z.object({ range: z.object({ min: z.number().int(), max: z.number().int() }), leases: z.array(PortLeaseSchema) }),
  needs: ['ports'],
  handler: ({ ports }) => ({ range: ports.range, leases: ports.list() })
})
