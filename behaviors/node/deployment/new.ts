import { z } from 'zod'
import { HandleSchema } from '../../../src/services/provider/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/deployment/new',
  describe: 'Deploy an ensemble (the YAML text of an ensemble file, specs/deployments.md) from this node: an orchestrator actor is started for it and the ensemble id is answered at once; follow it with /dms/node/deployment/status. The whole file is validated first: every problem is named in one BadRequest.',
  request: z.strictObject({
    ensemble: z.string().min(1).max(1024 * 1024),
    /** Values of the ${VAR}s the file uses. */
    env: z.record(z.string(), z.string()).optional(),
    /** Deadline to Running, in ms (default 2 min). */
    timeoutMs: z.number().int().positive().max(24 * 3600_000).optional(),
    /** How long bids are collected at most (default 1 s). */
    bidWindowMs: z.number().int().positive().max(60_000).optional(),
    /** Allow two ensemble nodes on one provider (default false). */
    colocate: z.boolean().optional(),
    /** Images to run instead of those the file names: {"hello-world": "localhost/my-image"}. */
    images: z.record(z.string().min(1), z.string().min(1)).optional()
  }),
  response: z.object({ ensembleId: z.string(), orchestrator: HandleSchema }),
  needs: ['deployments'],
  handler: async ({ deployments }, request, call) => await deployments.create(call.invoker, request)
})
