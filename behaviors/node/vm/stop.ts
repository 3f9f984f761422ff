import { z } from 'zod'
import { AllocationView } from '../../../src/services/provider/index.js'
import { NotFound } from '../../../src/lib/errors.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/vm/stop',
  describe: 'Stop a vm allocation of this node by id (SIGTERM to its workload in the guest, SIGKILL after the grace, then the VM is gone).',
  request: z.strictObject({ id: z.string(), graceMs: z.number().int().nonnegative().max(300_000).optional() }),
  response: AllocationView,
  needs: ['provider'],
  handler: async ({ provider }, { id, graceMs }) => {
    if (provider.list({ id, executor: 'vm' }).length === 0) throw new NotFound(`no vm allocation ${id} on this node`, { id })
    return await provider.stopAllocation(id, { graceMs })
  }
})
