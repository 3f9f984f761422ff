import { defineBehavior } from '../define.js'
import { CancelRequest, Empty } from '../../src/stream/wire.js'

export default defineBehavior({
  path: '/dms/stream/cancel',
  // No capability: bound to the stream by the authenticated peer and the stream id (see data).
  capability: false,
  describe: 'Either side ends a stream: to the writer (the reader cancelled: it frees everything) or to the reader (the writer gave up, with its error when it had one). Idempotent.',
  request: CancelRequest,
  response: Empty,
  needs: ['streams'],
  handler: ({ streams }, req, call) => { streams.cancel(call, req); return {} }
})
