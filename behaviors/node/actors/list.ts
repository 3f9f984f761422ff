import { z } from 'zod'
import { HandleSchema } from '../../schemas.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/actors/list',
  describe: 'The actors running on this node (the node itself, the resource manager, the port allocator, one per allocation) with handle, kind and mailbox depth.',
  request: z.object({}).strict(),
  response: z.object({ actors: z.array(z.object({ handle: HandleSchema, kind: z.string(), running: z.number().int(), queued: z.number().int(), handled: z.number().int() })) }),
  needs: ['actors'],
  handler: ({ actors }) => ({ actors: actors.list() })
})
