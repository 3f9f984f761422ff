import { z } from 'zod'
import { BidSubmission } from '../../src/services/orchestrator/index.js'
import { defineOrchestratorBehavior } from '../define.js'

export default defineOrchestratorBehavior({
  path: '/dms/deployment/bid',
  // No capability: a bid proves itself. Its signature is checked against the DID and PeerId it
  // names, and only bids for this orchestrator's ensemble and nodes are taken; anything else is
  // dropped, so an unasked bid costs the sender its rate limit and nothing more.
  capability: false,
  describe: 'Bids of a provider for nodes of this orchestrator\'s ensemble; each is taken only if its signature matches the provider it names.',
  request: BidSubmission,
  response: z.object({ taken: z.number().int() }),
  needs: ['orchestrator'],
  handler: ({ orchestrator }, request) => ({ taken: orchestrator.acceptBids(request.ensembleId, request.bids) })
})
