import { z } from 'zod'
import { JobInput } from '../../../src/services/jobs/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/job/new',
  describe: 'Run a job (the YAML text of a job file, specs/jobs.md) coordinated by this node: its parts are deployed on the nodes that bid for them, a work queue across them; answers the job id at once; follow it with /dms/node/job/status. The files split.directory / split.files name come as inputs (the CLI reads them).',
  request: z.strictObject({
    job: z.string().min(1).max(1024 * 1024),
    inputs: z.array(JobInput).max(10_000).optional()
  }),
  response: z.object({ id: z.string() }),
  needs: ['jobs'],
  handler: async ({ jobs }, request, call) => await jobs.create(call.invoker, request)
})
