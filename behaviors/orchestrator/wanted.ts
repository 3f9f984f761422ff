import { z } from 'zod'
import { defineOrchestratorBehavior } from '../define.js'

export default defineOrchestratorBehavior({
  path: '/dms/deployment/wanted',
  // No capability: the answer is only whether the caller's own node still runs part of this
  // deployment, which that node knows already; a provider restarted after a crash asks it.
  capability: false,
  describe: 'Whether the calling provider still runs part of this deployment; a provider restarted with a commit of it asks, and releases everything if not.',
  request: z.strictObject({ ensembleId: z.string() }),
  response: z.object({ wanted: z.boolean() }),
  needs: ['orchestrator'],
  readOnly: true,
  handler: ({ orchestrator }, request, call) => ({ wanted: request.ensembleId === orchestrator.ensembleId && orchestrator.wanted(call.from.addr.peer) })
})
