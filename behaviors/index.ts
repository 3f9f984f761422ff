import status from './public/status.js'
import { peerBehaviors } from './node/peers/index.js'
import { capBehaviors } from './cap/index.js'
import { resourceBehaviors } from './node/onboarding/index.js'

/**
 * Every behaviour of a dms node, one declaration per file. The dispatcher, `specs/behaviors.md`
 * and `dms actor cmd --help` are all built from this one list; a path declared twice stops the
 * node at start-up (DuplicateBehaviorError).
 */
export const behaviors = [
  status,
  ...peerBehaviors,
  ...capBehaviors,
  ...resourceBehaviors
] as const

export type BehaviorPath = (typeof behaviors)[number]['path']
