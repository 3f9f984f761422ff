import { defineBehavior } from '../define.js'
import { Empty, EndRequest } from '../../src/stream/wire.js'

export default defineBehavior({
  path: '/dms/stream/end',
  // No capability: bound to the stream by the authenticated peer and the stream id (see data).
  capability: false,
  describe: 'The end of a stream, writer → reader: no chunk follows seq; the reader reads what it holds, then the end (with info).',
  request: EndRequest,
  response: Empty,
  needs: ['streams'],
  handler: ({ streams }, req, call) => { streams.end(call, req); return {} }
})
