import { z } from 'zod'
import { OnboardRequestSchema } from '../../../src/services/resources/index.js'
import { defineBehavior } from '../../define.js'
import { OnboardStatusSchema } from './schemas.js'

export default defineBehavior({
  path: '/dms/node/onboarding/onboard',
  describe: 'Offer part of this machine to the network (or change the offer); refuses more than the machine has, and shrinking below what is in use unless force.',
  request: OnboardRequestSchema.extend({ force: z.boolean().optional() }),
  response: OnboardStatusSchema,
  needs: ['resources'],
  handler: async ({ resources }, { force, ...offer }) => await resources.onboard(offer, { force })
})
