import { z } from 'zod'
import { AllocationView } from '../../../src/services/provider/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/vm/list',
  describe: 'The vm allocations on this node.',
  request: z.strictObject({}),
  response: z.object({ allocations: z.array(AllocationView) }),
  needs: ['provider'],
  readOnly: true,
  handler: ({ provider }) => ({ allocations: provider.list({ executor: 'vm' }) })
})
