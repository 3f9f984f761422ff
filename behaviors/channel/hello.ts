import { defineBehavior } from '../define.js'
import { ChannelAck, HelloRequest } from '../../src/channel/wire.js'

export default defineBehavior({
  path: '/dms/channel/hello',
  // capability: the path. `/dms/channel` grants a sender every channel to this node.
  describe: 'Channel handshake (specs/channel.md): the sender gives its last assigned and acknowledged sequence numbers; the receiver answers its checkpoint (highest handled) and the refusals the sender has not acknowledged. The sender resumes after the checkpoint.',
  request: HelloRequest,
  response: ChannelAck,
  needs: ['channels'],
  handler: async ({ channels }, req, call) => await channels.hello(call, req)
})
