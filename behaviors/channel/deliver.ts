import { defineBehavior } from '../define.js'
import { ChannelAck, DeliverRequest } from '../../src/channel/wire.js'

export default defineBehavior({
  path: '/dms/channel/deliver',
  describe: 'Channel messages in sequence (specs/channel.md). The receiver queues what follows its checkpoint in order, drops duplicates and anything after a gap, and answers once they are handled (or after a short wait) with its checkpoint: the cumulative ack, with the refusals of messages the sender has not acknowledged.',
  request: DeliverRequest,
  response: ChannelAck,
  needs: ['channels'],
  handler: async ({ channels }, req, call) => await channels.deliver(call, req)
})
