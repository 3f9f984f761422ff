import { z } from 'zod'
import { JobView } from '../../../src/services/jobs/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/job/cancel',
  describe: 'Cancel a job: every part in flight is stopped and its deployment shut down (everything released on every node); answers once that is done (status Cancelled). An ended job is answered as it is.',
  request: z.strictObject({ id: z.string() }),
  response: JobView,
  needs: ['jobs'],
  handler: async ({ jobs }, { id }) => await jobs.cancel(id)
})
