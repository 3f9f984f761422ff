import { z } from 'zod'
import { unauthorized } from '../../src/security/reasons.js'
import { RevocationRecordSchema } from '../../src/security/revocations.js'
import { defineBehavior } from '../define.js'

export default defineBehavior({
  path: '/dms/cap/revoke',
  // No capability: whoever issued a token may revoke it, on any node, without being granted
  // anything there (otherwise a non-root issuer could not stop its own tokens while its daemon
  // runs). The handler admits only the record's issuer, and the record is verified against the
  // issuer's key; a record only ever revokes tokens that issuer signed.
  capability: false,
  describe: 'Records a revocation signed by the token\'s issuer (the token joins the revoke anchors) and publishes it on /nunet/revoke so every node refuses chains through it. Only the issuer may call it.',
  request: z.object({ record: RevocationRecordSchema }),
  response: z.object({ id: z.string(), fresh: z.boolean(), spread: z.boolean() }),
  needs: ['caps'],
  limits: { perSenderPerSec: 20, burst: 100 },
  handler: async ({ caps }, { record }, call) => {
    if (record.iss !== call.invoker) throw unauthorized('not-issuer', `only the token's issuer (${record.iss}) may revoke it; this call was signed by ${call.invoker}`)
    return await caps.revoke(record)
  }
})
