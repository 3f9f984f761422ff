import { z } from 'zod'
import { ReservationSchema, ResourceRequestSchema } from '../../../src/services/resources/index.js'
import { MAX_RESERVATION_TTL_MS } from '../../../src/services/resources/constants.js'
import { defineBehavior } from '../../define.js'

/** Several reservations as one ledger operation: a deployment's allocations, all or none. */
export default defineBehavior({
  path: '/dms/node/resources/reserve-all',
  describe: 'Promise resources to several ids until ttlMs from now, as one ledger operation: all of them or none (InsufficientResources names the first that does not fit).',
  request: z.strictObject({
    items: z.array(z.strictObject({ id: z.string(), resources: ResourceRequestSchema })).min(1).max(64),
    ttlMs: z.number().int().positive().max(MAX_RESERVATION_TTL_MS)
  }),
  response: z.object({ reservations: z.array(ReservationSchema) }),
  needs: ['resources'],
  handler: async ({ resources }, { items, ttlMs }) => ({ reservations: await resources.reserveAll(items.map(i => ({ id: i.id, request: i.resources })), ttlMs) })
})
