import { z } from 'zod'
import { StreamAccepted, StreamOpen } from '../../src/stream/wire.js'
import { followLogs } from '../../src/stream/pump.js'
import { defineAllocationBehavior } from '../define.js'

export default defineAllocationBehavior({
  path: '/dms/allocation/logs/stream',
  describe: 'Follows this allocation\'s stdout or stderr on a stream (specs/streams.md) from a byte offset: chunks {data, nextOffset, skipped?} as soon as they are written, credit permitting; the stream ends with {nextOffset} once the allocation ended and everything was sent.',
  request: z.strictObject({
    open: StreamOpen,
    stream: z.enum(['stdout', 'stderr']).default('stdout'),
    offset: z.number().int().nonnegative().default(0)
  }),
  response: StreamAccepted,
  needs: ['allocation', 'streams'],
  // beside the one-at-a-time mailbox: a follow never holds up a stop (and it answers at once)
  readOnly: true,
  handler: ({ allocation, streams }, req, call) => {
    allocation.view() // NotFound before the stream opens when the allocation is gone
    const w = streams.accept(call, req.open)
    void followLogs(w, async (o) => await allocation.logs({ stream: req.stream, offset: o.offset, maxBytes: o.maxBytes, wait: true, signal: o.signal }), req.offset)
    return { id: req.open.id }
  }
})
