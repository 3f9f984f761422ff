import allocate from './allocate.js'
import commit from './commit.js'
import revert from './revert.js'
import request from './request.js'
import requestDirect from './request/direct.js'
import allocationsList from '../node/allocations/list.js'
import allocationRestart from '../node/allocation/restart.js'
import allocationStop from '../node/allocation/stop.js'
import containerList from '../node/container/list.js'
import containerStart from '../node/container/start.js'
import containerStop from '../node/container/stop.js'
import vmList from '../node/vm/list.js'
import vmStartCustom from '../node/vm/start/custom.js'
import vmStop from '../node/vm/stop.js'

/** The provider side of deployments, and the node's own allocation, container and VM controls. */
export const providerBehaviors = [commit, allocate, revert, request, requestDirect, allocationsList, allocationStop, allocationRestart, containerStart, containerStop, containerList, vmStartCustom, vmStop, vmList] as const
