import { z } from 'zod'
import { LOG_LEVELS } from '../../../src/lib/log.js'
import { defineBehavior } from '../../define.js'

const Level = z.enum(LOG_LEVELS)
/** A part is a logger's `part` binding (network, hello, peers, actor, api, allocations, …). */
const Part = z.string().regex(/^[a-z][a-z0-9-]{0,39}$/, 'a part name: lower case letters, digits and -')

export default defineBehavior({
  path: '/dms/node/logger/config',
  describe: 'The logging configuration: the default level and levels per part (network, hello, peers, actor, api, allocations, …; a part covers the parts under it). With level and/or parts, changes them at run time first (a part set to null goes back to the default). Not kept across restarts: the configured logLevel applies at start.',
  request: z.strictObject({
    level: Level.optional(),
    parts: z.record(Part, Level.nullable()).refine(p => Object.keys(p).length <= 32, 'at most 32 parts at once').optional()
  }),
  response: z.object({ level: Level, parts: z.record(z.string(), Level) }),
  needs: ['logger', 'events'],
  handler: ({ logger, events }, req) => {
    if (req.level === undefined && req.parts === undefined) return logger.get()
    const config = logger.set(req)
    events.emit('logger.changed', { level: config.level, parts: config.parts })
    return config
  }
})
