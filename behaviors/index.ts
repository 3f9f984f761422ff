import status from './public/status.js'
import { peerBehaviors } from './node/peers/index.js'
import { capBehaviors } from './cap/index.js'
import { resourceBehaviors } from './node/onboarding/index.js'
import actorsList from './node/actors/list.js'
import nodeEvents from './node/events.js'
import loggerConfig from './node/logger/config.js'
import uiToken from './node/ui/token.js'
import { providerBehaviors } from './deployment/index.js'
import { deploymentBehaviors } from './node/deployment/index.js'
import { jobBehaviors } from './node/job/index.js'
export { orchestratorBehaviors } from './orchestrator/index.js'
export { allocationBehaviors } from './allocation/index.js'
import portsList from './node/ports/list.js'
import portsRelease from './node/ports/release.js'
import portsReserve from './node/ports/reserve.js'
import { channelBehaviors } from './channel/index.js'
import channelsList from './node/channels/list.js'
import { streamBehaviors } from './stream/index.js'
import streamsList from './node/streams/list.js'

/**
 * Every behaviour of a dms node, one declaration per file. The dispatcher, `specs/behaviors.md`
 * and `dms actor cmd --help` are all built from this one list; a path declared twice stops the
 * node at start-up (DuplicateBehaviorError).
 */
export const behaviors = [
  status,
  ...peerBehaviors,
  ...capBehaviors,
  ...resourceBehaviors,
  portsReserve,
  portsRelease,
  portsList,
  actorsList,
  nodeEvents,
  loggerConfig,
  uiToken,
  ...providerBehaviors,
  ...deploymentBehaviors,
  ...jobBehaviors,
  ...channelBehaviors,
  channelsList,
  ...streamBehaviors,
  streamsList
] as const

/**
 * What the resource-manager and port-allocator actors answer: the node's own paths for changing
 * the ledger and the port table. The node's behaviours forward every change to these actors, which
 * own the state and handle one message at a time (src/services/machine-actors.ts).
 */
export const resourceManagerBehaviors = resourceBehaviors.filter(b =>
  ['/dms/node/onboarding/onboard', '/dms/node/onboarding/offboard', '/dms/node/resources/reserve', '/dms/node/resources/reserve-all', '/dms/node/resources/commit', '/dms/node/resources/release'].includes(b.path))
export const portAllocatorBehaviors = [portsReserve, portsRelease, portsList] as const

export type BehaviorPath = (typeof behaviors)[number]['path']
