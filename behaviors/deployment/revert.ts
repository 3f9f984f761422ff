import { z } from 'zod'
import { EnsembleId, RevertReply } from '../../src/services/provider/index.js'
import { defineBehavior } from '../define.js'

export default defineBehavior({
  path: '/dms/deployment/revert',
  describe: 'Stop and remove the allocations of an ensemble and release its commit (resources and ports). Idempotent: an ensemble with nothing left here answers empty lists.',
  request: z.strictObject({ ensembleId: EnsembleId }),
  response: RevertReply,
  needs: ['provider'],
  handler: async ({ provider }, { ensembleId }, call) => await provider.revert(call.invoker, ensembleId)
})
