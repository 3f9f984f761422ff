import { z } from 'zod'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/onboarding/offboard',
  describe: 'Withdraw the offer; refused while reservations or allocations hold resources unless force (which cancels reservations).',
  request: z.object({ force: z.boolean().optional() }),
  response: z.object({
    offboarded: z.literal(true),
    cancelledReservations: z.array(z.string()),
    remainingAllocations: z.array(z.string())
  }),
  needs: ['resources'],
  handler: async ({ resources }, { force }) => await resources.offboard({ force })
})
