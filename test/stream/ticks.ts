import { z } from 'zod'
import { defineBehavior } from '../../behaviors/define.js'
import type { ChannelServiceInit } from '../../src/channel/index.js'
import { StreamAccepted, StreamOpen } from '../../src/stream/wire.js'
import type { StreamWriter } from '../../src/stream/index.js'
import { pipeStream } from '../../src/stream/pump.js'

/**
 * Heartbeats fast enough for tests to see a lost peer within a second: 200 ms × 3 misses, each
 * waiting at most 200 ms. The bound a test asserts is LIVENESS_BOUND_MS.
 */
export const FAST_CHANNELS: ChannelServiceInit = { heartbeatMs: 200, heartbeatMisses: 3, callTimeoutMs: 3_000 }
/** Interval × misses after the last answer, one more interval for the beat in flight, and slack for a loaded 2-core machine. */
export const LIVENESS_BOUND_MS = 200 * 3 + 200 + 1_200

/** The writers the ticks behaviour made in this process, newest last (tests watch their signals). */
export const writers: StreamWriter[] = []

/**
 * A stream source for tests: a tick `{n}` every `everyMs` (0: as fast as credit allows) until
 * `count` ticks (then the end, `{ticks}`) or the stream is over. Public, so no trust is needed
 * between the test's nodes.
 */
export const ticksBehavior = defineBehavior({
  path: '/test/stream/ticks',
  capability: false,
  describe: 'test: ticks on a stream',
  request: z.strictObject({ open: StreamOpen, everyMs: z.number().int().min(0).default(0), count: z.number().int().min(0).default(1_000_000), pad: z.number().int().min(0).default(0) }),
  response: StreamAccepted,
  needs: ['streams'],
  handler: ({ streams }, req, call) => {
    const w = streams.accept(call, req.open)
    writers.push(w)
    void (async () => {
      try {
        for (let n = 1; n <= req.count && w.state === 'open'; n++) {
          await w.write({ n, pad: 'x'.repeat(req.pad) })
          if (req.everyMs > 0) await new Promise(resolve => setTimeout(resolve, req.everyMs))
        }
        if (w.state === 'open') await w.end({ ticks: req.count })
      } catch { /* the stream is over: its signal says why */ }
    })()
    return { id: req.open.id }
  }
})

/**
 * A relay for tests, as `/dms/node/deployment/logs/stream` relays a remote allocation's log: opens
 * the ticks of `target` and pipes them into the caller's stream.
 */
export const relayBehavior = defineBehavior({
  path: '/test/stream/relay',
  capability: false,
  describe: 'test: relays the ticks of another node',
  request: z.strictObject({ open: StreamOpen, target: z.string(), everyMs: z.number().int().min(0).default(20) }),
  response: StreamAccepted,
  needs: ['streams'],
  handler: async ({ streams }, req, call) => {
    const up = await streams.open(req.target, '/test/stream/ticks', { everyMs: req.everyMs }, { window: req.open.window })
    const w = streams.accept(call, req.open)
    void pipeStream(up, w)
    return { id: req.open.id }
  }
})

/** Accepts a stream and writes nothing: a test speaks the protocol itself from the writer's node. */
export const silentBehavior = defineBehavior({
  path: '/test/stream/silent',
  capability: false,
  describe: 'test: a stream that the test writes by hand',
  request: z.strictObject({ open: StreamOpen }),
  response: StreamAccepted,
  needs: ['streams'],
  handler: ({ streams }, req, call) => {
    writers.push(streams.accept(call, req.open))
    return { id: req.open.id }
  }
})
