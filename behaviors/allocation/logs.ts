import { z } from 'zod'
import { MAX_LOG_READ_BYTES } from '../../src/services/allocations/constants.js'
import { defineAllocationBehavior, pollSignal } from '../define.js'

export default defineAllocationBehavior({
  path: '/dms/allocation/logs',
  describe: 'A chunk of this allocation\'s stdout or stderr from a byte offset (offsets count every byte ever written; rotated-away bytes are reported as skipped). With wait, a long poll: answers once there is more, the allocation ended, or at the caller\'s deadline.',
  request: z.strictObject({
    stream: z.enum(['stdout', 'stderr']).default('stdout'),
    offset: z.number().int().nonnegative().default(0),
    maxBytes: z.number().int().positive().max(MAX_LOG_READ_BYTES).default(64 * 1024),
    wait: z.boolean().default(false)
  }),
  response: z.object({ data: z.string(), nextOffset: z.number().int(), eof: z.boolean(), ended: z.boolean(), skipped: z.number().int().optional() }),
  needs: ['allocation'],
  readOnly: true,
  handler: async ({ allocation }, request, call) => await allocation.logs({ ...request, signal: pollSignal(call) })
})
