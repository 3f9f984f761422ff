import { z } from 'zod'
import { AllocationView } from '../../../src/services/provider/index.js'
import { NotFound } from '../../../src/lib/errors.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/container/stop',
  describe: 'Stop a docker allocation of this node by id.',
  request: z.strictObject({ id: z.string(), graceMs: z.number().int().nonnegative().max(300_000).optional() }),
  response: AllocationView,
  needs: ['provider'],
  handler: async ({ provider }, { id, graceMs }) => {
    if (provider.list({ id, executor: 'docker' }).length === 0) throw new NotFound(`no docker allocation ${id} on this node`, { id })
    return await provider.stopAllocation(id, { graceMs })
  }
})
