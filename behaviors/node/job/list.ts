import { z } from 'zod'
import { JobView } from '../../../src/services/jobs/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/job/list',
  describe: 'The jobs this node coordinates (or coordinated), oldest first.',
  request: z.strictObject({}),
  response: z.object({ jobs: z.array(JobView) }),
  needs: ['jobs'],
  readOnly: true,
  handler: async ({ jobs }) => ({ jobs: jobs.list() })
})
