import { z } from 'zod'
import { JobView } from '../../../src/services/jobs/index.js'
import { defineBehavior, pollSignal } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/job/status',
  describe: 'One job: status (Placing, Running, Reducing, Completed, Failed, Cancelled), reason, transitions, its nodes, and each part (status, runs, where its result came from, size and sha256). With after (a version), a long poll: answers once something changed, it ended, or just before the caller\'s deadline.',
  request: z.strictObject({ id: z.string(), after: z.number().int().nonnegative().optional() }),
  response: JobView,
  needs: ['jobs'],
  readOnly: true,
  handler: async ({ jobs }, { id, after }, call) => await jobs.status(id, after === undefined ? {} : { after, signal: pollSignal(call) })
})
