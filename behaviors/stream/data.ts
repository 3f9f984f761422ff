import { defineBehavior } from '../define.js'
import { CreditReply, DataRequest } from '../../src/stream/wire.js'

export default defineBehavior({
  path: '/dms/stream/data',
  // No capability: the stream was authorized when it was opened (by the behaviour that accepted
  // it); this frame is bound to it by the Noise-authenticated peer and the unguessable stream id.
  capability: false,
  describe: 'One chunk of a stream, writer → reader (specs/streams.md). Answers the reader\'s credit as it stands (bytes the writer may have sent in all); NotFound when the reader no longer has the stream.',
  request: DataRequest,
  response: CreditReply,
  needs: ['streams'],
  handler: ({ streams }, req, call) => streams.data(call, req)
})
