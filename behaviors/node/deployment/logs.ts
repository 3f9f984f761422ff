import { z } from 'zod'
import { MAX_LOG_READ_BYTES } from '../../../src/services/allocations/constants.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/deployment/logs',
  describe: 'A chunk of one allocation\'s stdout or stderr, wherever it runs, read by the deployment\'s orchestrator (as /dms/allocation/logs: offsets, wait for a long poll).',
  request: z.strictObject({
    id: z.string(),
    allocation: z.string(),
    stream: z.enum(['stdout', 'stderr']).default('stdout'),
    offset: z.number().int().nonnegative().default(0),
    maxBytes: z.number().int().positive().max(MAX_LOG_READ_BYTES).default(64 * 1024),
    wait: z.boolean().default(false)
  }),
  response: z.object({ data: z.string(), nextOffset: z.number().int(), eof: z.boolean(), ended: z.boolean(), skipped: z.number().int().optional() }),
  needs: ['deployments'],
  readOnly: true,
  handler: async ({ deployments }, r, call) => {
    // the provider answers a long poll a little before our own caller's deadline
    const timeoutMs = Math.max(1, Math.floor(call.envelope.exp - Date.now() - 500))
    return await deployments.logs(r.id, r.allocation, { stream: r.stream, offset: r.offset, maxBytes: r.maxBytes, wait: r.wait, timeoutMs }) as { data: string, nextOffset: number, eof: boolean, ended: boolean }
  }
})
