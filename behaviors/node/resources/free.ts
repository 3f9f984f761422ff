import { z } from 'zod'
import { defineBehavior } from '../../define.js'
import { ResourcesReplySchema } from '../onboarding/schemas.js'

export default defineBehavior({
  path: '/dms/node/resources/free',
  describe: 'Onboarded minus reserved minus allocated, per dimension (zero when not onboarded).',
  request: z.object({}),
  response: ResourcesReplySchema,
  needs: ['resources'],
  handler: ({ resources }) => ({ resources: resources.snapshot().free })
})
