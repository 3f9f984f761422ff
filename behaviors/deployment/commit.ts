import { CommitReply, CommitRequest } from '../../src/services/provider/index.js'
import { defineBehavior } from '../define.js'

export default defineBehavior({
  path: '/dms/deployment/commit',
  describe: 'Reserve resources and ports for named allocations of an ensemble until ttlMs from now (all or nothing; static ports checked free on the OS). The commit belongs to its caller: only it may allocate or revert it. Unallocated commits are released by themselves when they expire.',
  request: CommitRequest,
  response: CommitReply,
  needs: ['provider'],
  handler: async ({ provider }, request, call) => await provider.commit(call.invoker, request)
})
