import { z } from 'zod'
import { defineBehavior } from '../../define.js'
import { OnboardStatusSchema } from './schemas.js'

export default defineBehavior({
  path: '/dms/node/onboarding/status',
  describe: 'Whether this machine is onboarded, with what and since when.',
  request: z.object({}),
  response: OnboardStatusSchema,
  needs: ['resources'],
  handler: ({ resources }) => resources.status()
})
