import { z } from 'zod'
import { LogChunkReply, LogReadFields } from '../../src/services/provider/index.js'
import { defineAllocationBehavior, pollSignal } from '../define.js'

export default defineAllocationBehavior({
  path: '/dms/allocation/logs',
  describe: 'A chunk of this allocation\'s stdout or stderr from a byte offset (offsets count every byte ever written; rotated-away bytes are reported as skipped). With wait, a long poll: answers once there is more, the allocation ended, or at the caller\'s deadline.',
  request: z.strictObject(LogReadFields),
  response: LogChunkReply,
  needs: ['allocation'],
  readOnly: true,
  handler: async ({ allocation }, request, call) => await allocation.logs({ ...request, signal: pollSignal(call) })
})
