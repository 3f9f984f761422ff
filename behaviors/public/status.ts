import { z } from 'zod'
import { defineBehavior } from '../define.js'

export default defineBehavior({
  path: '/public/status',
  describe: 'Liveness of the node: its status, the dms version and seconds since start. Needs no capability.',
  request: z.object({}),
  response: z.object({ status: z.literal('running'), version: z.string(), uptimeS: z.number() }),
  needs: ['node'],
  handler: ({ node }) => ({ status: 'running' as const, version: node.version, uptimeS: Math.floor((Date.now() - node.startedAt) / 1000) })
})
