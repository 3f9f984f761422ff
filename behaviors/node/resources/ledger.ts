import { z } from 'zod'
import { AllocationSchema, ReservationSchema, ResourceVectorSchema } from '../../../src/services/resources/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/resources/ledger',
  describe: 'The whole ledger: onboarded, live reservations, allocations, their sums, free and any deficit.',
  request: z.object({}),
  response: z.object({
    at: z.number(),
    onboarded: ResourceVectorSchema.nullable(),
    since: z.number().nullable(),
    reservations: z.array(ReservationSchema),
    allocations: z.array(AllocationSchema),
    reserved: ResourceVectorSchema,
    allocated: ResourceVectorSchema,
    free: ResourceVectorSchema,
    deficit: ResourceVectorSchema.nullable()
  }),
  needs: ['resources'],
  handler: ({ resources }) => resources.snapshot()
})
