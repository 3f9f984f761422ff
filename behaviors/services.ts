import type { NodeInfo } from '../src/node/info.js'
import type { PeerService } from '../src/network/peer-service.js'
import type { CapService } from '../src/security/service.js'
import type { ResourceManager } from '../src/services/resources/index.js'
import type { PortAllocator } from '../src/services/ports/index.js'
import type { HardwareService } from '../src/services/hardware/index.js'
import type { NodeStateService } from '../src/services/node-state/index.js'
import type { ActorInfo } from '../src/actor/system.js'
import type { AllocationControl, ProviderService } from '../src/services/provider/index.js'
import type { ExecutorStatus } from '../src/services/executors/index.js'
import type { DeploymentService, OrchestratorControl } from '../src/services/orchestrator/index.js'
import type { JobService } from '../src/services/jobs/index.js'
import type { ChannelService } from '../src/channel/index.js'
import type { StreamService } from '../src/stream/index.js'
import type { NodeEvents } from '../src/node/events.js'
import type { LogControl } from '../src/lib/log.js'
import type { UiAuth } from '../src/api/ui-auth.js'

/**
 * Every service a behaviour may ask for by name in `needs`. A handler receives exactly the ones it
 * names, never the libp2p node or the whole Node. `node/` provides them all at start-up.
 */
export interface Services {
  node: NodeInfo
  peers: PeerService
  caps: CapService
  resources: ResourceManager
  ports: PortAllocator
  hardware: HardwareService
  nodeState: NodeStateService
  /** The node's running actors (the node itself and its children). */
  actors: { list: () => ActorInfo[] }
  /** The executors this node knows, and whether each works here (and why not). */
  executors: { status: () => ExecutorStatus[] }
  /** Deployments on this node (commit, allocate, revert) and its allocations. */
  provider: ProviderService
  /** Deployments this node orchestrates, and its bids as a provider. */
  deployments: DeploymentService
  /** Jobs this node coordinates: parts on other nodes, results here (specs/jobs.md). */
  jobs: JobService
  /** Reliable ordered channels between actors (specs/channel.md). */
  channels: ChannelService
  /** Streams between actors: credit-based flow control, liveness on both sides (specs/streams.md). */
  streams: StreamService
  /** The node's event stream (a bounded ring of recent events). */
  events: NodeEvents
  /** Log levels, changed at run time. */
  logger: LogControl
  /** The dashboard's logins: one-time tokens for `dms ui`. */
  ui: Pick<UiAuth, 'issueToken'>
}

/** What an allocation actor's behaviours receive: their own allocation, nothing else. */
export interface AllocationServices {
  allocation: AllocationControl
  /** To accept a stream (a log follow) opened on this allocation. */
  streams: StreamService
}
/** What an orchestrator actor's behaviours receive: their own deployment. */
export interface OrchestratorServices {
  orchestrator: OrchestratorControl
}
export type ServiceName = keyof Services
