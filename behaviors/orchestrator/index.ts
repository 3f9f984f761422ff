import bid from './bid.js'
import wanted from './wanted.js'

/** What every orchestrator actor answers (its inbox is `orch/<ensembleId>`). */
export const orchestratorBehaviors = [bid, wanted] as const
