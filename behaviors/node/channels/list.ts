import { z } from 'zod'
import { defineBehavior } from '../../define.js'

const State = z.enum(['connected', 'connecting', 'disconnected'])
export default defineBehavior({
  path: '/dms/node/channels/list',
  describe: 'The reliable channels of this node (specs/channel.md), both ends: peer, name, connection state, status, and for a sender nextSeq, acked, outbox size, in flight and failed; for a receiver its checkpoint and duplicates dropped. Also the connection state of every peer a channel links to.',
  request: z.object({}).strict(),
  response: z.object({
    channels: z.array(z.object({
      role: z.enum(['sender', 'receiver']),
      name: z.string(),
      peer: z.string(),
      from: z.string(),
      to: z.string(),
      state: State,
      status: z.enum(['open', 'refused', 'closed']),
      nextSeq: z.number().int().optional(),
      acked: z.number().int().optional(),
      checkpoint: z.number().int().optional(),
      outbox: z.number().int().optional(),
      inFlight: z.number().int().optional(),
      failed: z.number().int().optional(),
      duplicates: z.number().int().optional()
    })),
    peers: z.array(z.object({ peer: z.string(), state: State }))
  }),
  needs: ['channels'],
  handler: ({ channels }) => ({ channels: channels.list(), peers: channels.peers() })
})
