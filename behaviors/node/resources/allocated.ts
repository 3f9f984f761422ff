import { z } from 'zod'
import { defineBehavior } from '../../define.js'
import { ResourcesReplySchema } from '../onboarding/schemas.js'

export default defineBehavior({
  path: '/dms/node/resources/allocated',
  describe: 'The resources held by committed allocations (live reservations are shown by /dms/node/status).',
  request: z.object({}),
  response: ResourcesReplySchema,
  needs: ['resources'],
  handler: ({ resources }) => ({ resources: resources.snapshot().allocated })
})
