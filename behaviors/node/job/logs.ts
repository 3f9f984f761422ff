import { z } from 'zod'
import { FileChunk } from '../../../src/services/jobs/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/job/logs',
  describe: 'A chunk (base64, from a byte offset) of one part\'s stderr as collected at the origin: of its recorded run, or of its last failed run.',
  request: z.strictObject({
    id: z.string(),
    part: z.number().int().nonnegative(),
    offset: z.number().int().nonnegative().default(0),
    maxBytes: z.number().int().positive().max(1024 * 1024).default(256 * 1024)
  }),
  response: FileChunk,
  needs: ['jobs'],
  readOnly: true,
  handler: async ({ jobs }, r) => await jobs.read(r.id, { what: 'stderr', part: r.part }, r.offset, r.maxBytes)
})
