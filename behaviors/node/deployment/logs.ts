import { z } from 'zod'
import { LogChunkReply, LogReadFields } from '../../../src/services/provider/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/deployment/logs',
  describe: 'A chunk of one allocation\'s stdout or stderr, wherever it runs, read by the deployment\'s orchestrator (as /dms/allocation/logs: offsets, wait for a long poll).',
  request: z.strictObject({ id: z.string(), allocation: z.string(), ...LogReadFields }),
  response: LogChunkReply,
  needs: ['deployments'],
  readOnly: true,
  handler: async ({ deployments }, r, call) => {
    // the provider answers a long poll a little before our own caller's deadline
    const timeoutMs = Math.max(1, Math.floor(call.envelope.exp - Date.now() - 500))
    return await deployments.logs(r.id, r.allocation, { stream: r.stream, offset: r.offset, maxBytes: r.maxBytes, wait: r.wait, timeoutMs }) as { data: string, nextOffset: number, eof: boolean, ended: boolean }
  }
})
