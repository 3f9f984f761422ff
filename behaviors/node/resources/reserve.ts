import { z } from 'zod'
import { ReservationSchema, ResourceRequestSchema } from '../../../src/services/resources/index.js'
import { MAX_RESERVATION_TTL_MS } from '../../../src/services/resources/constants.js'
import { defineBehavior } from '../../define.js'

/**
 * The ledger's reserve, for the deployment layer's two-phase commit and for operators; the
 * capability (this path) is what keeps anyone else from holding resources hostage.
 */
export default defineBehavior({
  path: '/dms/node/resources/reserve',
  describe: 'Promise resources to an id until ttlMs from now (all dimensions or nothing); InsufficientResources names the short one.',
  request: z.object({
    id: z.string(),
    resources: ResourceRequestSchema,
    ttlMs: z.number().int().positive().max(MAX_RESERVATION_TTL_MS)
  }),
  response: ReservationSchema,
  needs: ['resources'],
  handler: async ({ resources }, { id, resources: request, ttlMs }) => await resources.reserve(id, request, ttlMs)
})
