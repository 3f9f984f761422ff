import { z } from 'zod'
import { EVENTS_KEPT, NodeEventSchema } from '../../src/node/events.js'
import { defineBehavior, pollSignal } from '../define.js'

export default defineBehavior({
  path: '/dms/node/events',
  describe: `The node's recent events (peer connected/disconnected, hello heard, state, onboarding, allocation and deployment status, capability anchors and revocations, logger changes), oldest first: those numbered after \`after\` (default 0: all the node still keeps, at most ${EVENTS_KEPT}). With wait, a long poll: answers once there is one, or just before the caller's deadline. \`first\` is the oldest number still kept: a reader whose \`after\` + 1 is below it missed some.`,
  request: z.strictObject({
    after: z.number().int().nonnegative().optional(),
    wait: z.boolean().optional(),
    limit: z.number().int().positive().max(EVENTS_KEPT).optional()
  }),
  response: z.object({ events: z.array(NodeEventSchema), first: z.number().int(), last: z.number().int() }),
  needs: ['events'],
  readOnly: true,
  handler: async ({ events }, { after = 0, wait = false, limit }, call) => {
    const list = wait ? await events.wait(after, pollSignal(call), limit) : events.since(after, limit)
    return { events: list, first: events.first, last: events.last }
  }
})
