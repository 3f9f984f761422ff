import { z } from 'zod'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/streams/list',
  describe: 'The streams open on this node (specs/streams.md), both ends: role, id, the other node, window, chunks so far; a reader\'s unconsumed bytes, a writer\'s bytes sent, credit and whether it waits for credit. `open` counts them.',
  request: z.object({}).strict(),
  response: z.object({
    open: z.number().int(),
    streams: z.array(z.object({
      role: z.enum(['reader', 'writer']),
      id: z.string(),
      peer: z.string(),
      window: z.number().int(),
      chunks: z.number().int(),
      buffered: z.number().int().optional(),
      sent: z.number().int().optional(),
      credit: z.number().int().optional(),
      blocked: z.boolean().optional(),
      openedAt: z.number().int()
    }))
  }),
  needs: ['streams'],
  handler: ({ streams }) => { const list = streams.list(); return { open: list.length, streams: list } }
})
