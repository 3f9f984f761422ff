import { z } from 'zod'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/ports/release',
  describe: 'End every port lease of an allocation id (idempotent: an id with none frees nothing).',
  request: z.object({ allocationId: z.string() }).strict(),
  response: z.object({ ports: z.array(z.number().int()) }),
  needs: ['ports'],
  handler: async ({ ports }, { allocationId }) => ({ ports: await ports.release(allocationId) })
})
