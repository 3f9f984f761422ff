import { z } from 'zod'
import { ResourceVectorSchema } from '../../../src/services/resources/index.js'

/** `{onboarded, resources?, since?}`: the reply of onboard and of onboarding/status. */
export const OnboardStatusSchema = z.object({
  onboarded: z.boolean(),
  resources: ResourceVectorSchema.optional(),
  /** Unix ms of the first onboarding. */
  since: z.number().optional()
})

/** `{resources}`: the reply of the /dms/node/resources/* behaviours. */
export const ResourcesReplySchema = z.object({ resources: ResourceVectorSchema })
