import { z } from 'zod'
import { pipeStream } from '../../../src/stream/pump.js'
import { StreamAccepted, StreamOpen } from '../../../src/stream/wire.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/deployment/logs/stream',
  describe: 'Follows one allocation\'s output wherever it runs, on a stream (specs/streams.md): the deployment\'s orchestrator opens /dms/allocation/logs/stream on the allocation and relays it, credit and cancel included, to the caller\'s stream.',
  request: z.strictObject({
    open: StreamOpen,
    id: z.string(),
    allocation: z.string(),
    stream: z.enum(['stdout', 'stderr']).default('stdout'),
    offset: z.number().int().nonnegative().default(0)
  }),
  response: StreamAccepted,
  needs: ['deployments', 'streams'],
  readOnly: true,
  handler: async ({ deployments, streams }, req, call) => {
    const { actor, handle } = deployments.logsTarget(req.id, req.allocation)
    // upstream first: its refusal is this call's answer, before anything is accepted here
    const upstream = await streams.open(handle, '/dms/allocation/logs/stream', { stream: req.stream, offset: req.offset }, { from: actor, window: req.open.window })
    let w
    try { w = streams.accept(call, req.open) } catch (err) { upstream.cancel('the downstream stream could not be accepted'); throw err }
    void pipeStream(upstream, w)
    return { id: req.open.id }
  }
})
