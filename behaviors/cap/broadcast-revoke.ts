import { z } from 'zod'
import { REVOKE_BROADCAST, REVOKE_TOPIC } from '../../src/security/constants.js'
import { RevocationRecordSchema } from '../../src/security/revocations.js'
import { defineBehavior } from '../define.js'

export default defineBehavior({
  path: REVOKE_BROADCAST,
  topic: REVOKE_TOPIC,
  // No capability: a revocation record is self-authenticating (signed by the revoked token's
  // issuer, and only counted against tokens that issuer signed), so whoever relays it adds no
  // authority. Requiring one would let a partitioned or unanchored node miss revocations.
  // Floods are bounded by the per-sender limit below.
  capability: false,
  describe: 'A revocation heard on /nunet/revoke: verified against its issuer\'s DID and stored; chains through the revoked token fail from then on.',
  request: z.object({ record: RevocationRecordSchema }),
  response: z.object({ id: z.string(), fresh: z.boolean() }),
  needs: ['caps'],
  limits: { perSenderPerSec: 20, burst: 100 },
  // Not forwarded unless this node would keep it: a forged record lowers its publisher's score; one
  // from an issuer this node knows nothing of, or one it already holds, goes no further from here.
  gossipCheck: ({ caps }, { record }) => caps.checkRevocation(record),
  handler: async ({ caps }, { record }) => await caps.receiveRevocation(record)
})
