import { z } from 'zod'
import { ANCHOR_KINDS } from '../../src/security/anchors.js'
import { MAX_TOKEN_BYTES } from '../../src/security/constants.js'
import { AnchorsView } from '../../src/security/service.js'
import { defineBehavior } from '../define.js'

export default defineBehavior({
  path: '/dms/cap/anchor',
  describe: 'Adds or removes a trust anchor of the node\'s context: a root DID, or a require, provide or revoke token (removal also accepts a token\'s id). Takes effect before the reply.',
  request: z.object({
    op: z.enum(['add', 'remove']),
    kind: z.enum(ANCHOR_KINDS),
    value: z.string().min(1).max(MAX_TOKEN_BYTES)
  }),
  response: AnchorsView,
  needs: ['caps'],
  handler: async ({ caps }, { op, kind, value }) => op === 'add' ? await caps.addAnchor(kind, value) : await caps.removeAnchor(kind, value)
})
