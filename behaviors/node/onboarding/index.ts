// Machine behaviours: hardware, onboarding, resources, node state and labels, status.
import hardwareSpec from '../hardware/spec.js'
import hardwareUsage from '../hardware/usage.js'
import labelsRemove from '../labels/remove.js'
import labelsSet from '../labels/set.js'
import resourcesAllocated from '../resources/allocated.js'
import resourcesCommit from '../resources/commit.js'
import resourcesFree from '../resources/free.js'
import resourcesLedger from '../resources/ledger.js'
import resourcesOnboarded from '../resources/onboarded.js'
import resourcesRelease from '../resources/release.js'
import resourcesReserve from '../resources/reserve.js'
import resourcesReserveAll from '../resources/reserve-all.js'
import stateSet from '../state/set.js'
import status from '../status.js'
import offboard from './offboard.js'
import onboard from './onboard.js'
import onboardingStatus from './status.js'

export const resourceBehaviors = [
  hardwareSpec,
  hardwareUsage,
  onboard,
  offboard,
  onboardingStatus,
  resourcesOnboarded,
  resourcesAllocated,
  resourcesFree,
  resourcesLedger,
  resourcesReserve,
  resourcesReserveAll,
  resourcesCommit,
  resourcesRelease,
  stateSet,
  labelsSet,
  labelsRemove,
  status
] as const
