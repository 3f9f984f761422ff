import { z } from 'zod'
import { NotOnboarded } from '../../../src/lib/errors.js'
import { defineBehavior } from '../../define.js'
import { ResourcesReplySchema } from '../onboarding/schemas.js'

export default defineBehavior({
  path: '/dms/node/resources/onboarded',
  describe: 'The resources this machine offers (NotOnboarded when it offers none).',
  request: z.object({}),
  response: ResourcesReplySchema,
  needs: ['resources'],
  handler: ({ resources }) => {
    const s = resources.status()
    if (s.resources === undefined) throw new NotOnboarded('this machine has not onboarded any resources')
    return { resources: s.resources }
  }
})
