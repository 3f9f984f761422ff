import { z } from 'zod'
import { FileChunk } from '../../../src/services/jobs/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/job/result',
  describe: 'A chunk (base64, from a byte offset) of a completed job\'s result, or with part of one part\'s recorded output; size and sha256 of the whole come with each chunk, for the reader to check.',
  request: z.strictObject({
    id: z.string(),
    part: z.number().int().nonnegative().optional(),
    offset: z.number().int().nonnegative().default(0),
    maxBytes: z.number().int().positive().max(1024 * 1024).default(256 * 1024)
  }),
  response: FileChunk,
  needs: ['jobs'],
  readOnly: true,
  handler: async ({ jobs }, r) => await jobs.read(r.id, r.part === undefined ? { what: 'result' } : { what: 'output', part: r.part }, r.offset, r.maxBytes)
})
