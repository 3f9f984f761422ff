import { z } from 'zod'
import { RevocationRecordSchema } from '../../src/security/revocations.js'
import { defineBehavior } from '../define.js'

export default defineBehavior({
  path: '/dms/cap/revoke',
  describe: 'Records a revocation signed by the token\'s issuer (the token joins the revoke anchors) and publishes it on /nunet/revoke so every node refuses chains through it.',
  request: z.object({ record: RevocationRecordSchema }),
  response: z.object({ id: z.string(), fresh: z.boolean(), spread: z.boolean() }),
  needs: ['caps'],
  handler: async ({ caps }, { record }) => await caps.revoke(record)
})
