import { z } from 'zod'
import { AllocationView } from '../../../src/services/provider/index.js'
import { EXECUTOR_NAMES } from '../../../src/services/executors/types.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/allocations/list',
  describe: 'The allocations on this node, oldest first: id, ensemble, handle, owner, type, executor, status and reason, resources, ports, limits, times (ISO 8601), exit code, restarts, health.',
  request: z.strictObject({ id: z.string().optional(), executor: z.enum(EXECUTOR_NAMES).optional() }),
  response: z.object({ allocations: z.array(AllocationView) }),
  needs: ['provider'],
  readOnly: true,
  handler: ({ provider }, filter) => ({ allocations: provider.list(filter) })
})
