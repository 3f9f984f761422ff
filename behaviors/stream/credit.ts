import { defineBehavior } from '../define.js'
import { CreditRequest, Empty } from '../../src/stream/wire.js'

export default defineBehavior({
  path: '/dms/stream/credit',
  // No capability: bound to the stream by the authenticated peer and the stream id (see data).
  capability: false,
  describe: 'More credit for a stream, reader → writer (cumulative bytes the writer may have sent in all; a late one is overtaken by the next).',
  request: CreditRequest,
  response: Empty,
  needs: ['streams'],
  handler: ({ streams }, req, call) => { streams.credit(call, req); return {} }
})
