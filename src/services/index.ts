import type { Logger } from '../lib/log.js'
import type { Db } from '../store/db.js'
import { createHardwareService, type GpuCommands, type HardwareService } from './hardware/index.js'
import { createNodeStateService, type NodeStateService } from './node-state/index.js'
import { createPortAllocator, type PortAllocator, type PortRange } from './ports/index.js'
import { createResourceManager, type ResourceManager } from './resources/index.js'

export type { HardwareService } from './hardware/index.js'
export type { NodeStateService } from './node-state/index.js'
export type { PortAllocator } from './ports/index.js'
export type { ResourceManager } from './resources/index.js'

export interface MachineServicesInit {
  /** The data dir: disk figures are those of its filesystem. */
  dataDir: string
  /** Port allocator range (config `ports`; default 16384–65535). */
  ports?: PortRange
  /** Reservation expiry sweep period (default 5 s). */
  sweepIntervalMs?: number
  /** GPU tools to run (default `nvidia-smi` and `rocm-smi` from PATH; false skips one). */
  gpuCommands?: GpuCommands
  /** The daemon's environment (default process.env); GPU tools get only `childEnv` of it. */
  env?: NodeJS.ProcessEnv
  /** fsync each ledger/port/state batch (default true). */
  syncWrites?: boolean
}

export interface MachineServicesComponents {
  /** The node's one level db; each service takes a sublevel (`ledger`, `ports`, `node-state`). */
  db: Db
  log: Logger
  /** Unix ms (default Date.now); tests drive reservation expiry with it. */
  clock?: () => number
}

/** What this machine offers and how it is used: the four services behaviours ask for by name. */
export interface MachineServices {
  resources: ResourceManager
  ports: PortAllocator
  hardware: HardwareService
  nodeState: NodeStateService
  /** Hardware first (the ledger checks onboarding against it), then state, ledger, ports. */
  start: () => Promise<void>
  /** In reverse; resolves once queued writes finished, so the db can be closed after it. */
  stop: () => Promise<void>
}

export function createMachineServices (init: MachineServicesInit, components: MachineServicesComponents): MachineServices {
  const { db, log, clock } = components
  const syncWrites = init.syncWrites
  const hardware = createHardwareService(
    { dataDir: init.dataDir, gpuCommands: init.gpuCommands, env: init.env },
    { log: log.child({ service: 'hardware' }), clock })

  // The state and the ledger refer to each other through these closures only: the ledger asks
  // whether work is admitted (a reservation is new work; a commit keeps a promise, refused once
  // the node is stopping); the state asks what is still in flight — allocations and live
  // reservations, since a reservation can still become an allocation until it ends.
  let resources: ResourceManager | undefined
  const inFlight = (): number => {
    const s = resources?.snapshot()
    return s === undefined ? 0 : s.allocations.length + s.reservations.length
  }
  const nodeState = createNodeStateService(
    { syncWrites },
    { db, log: log.child({ service: 'node-state' }), clock, running: inFlight })
  resources = createResourceManager(
    { sweepIntervalMs: init.sweepIntervalMs, syncWrites },
    { db, log: log.child({ service: 'resources' }), clock, capacity: async () => await hardware.capacity(), admission: (kind) => nodeState.refusal(kind) })
  const ledger = resources
  const ports = createPortAllocator({ range: init.ports, syncWrites }, { db, log: log.child({ service: 'ports' }), clock })

  let unsubscribe: (() => void) | undefined
  const started: Array<{ stop: () => Promise<void> }> = []

  return {
    resources: ledger,
    ports,
    hardware,
    nodeState,
    async start () {
      try {
        // Ledger before state: a node restarted while `stopping` checks what still runs.
        for (const s of [hardware, ledger, nodeState, ports]) { await s.start(); started.unshift(s) }
      } catch (err) {
        for (const s of started.splice(0)) await s.stop()
        throw err
      }
      // When an allocation or reservation ends (released, expired and swept), a stopping node may now be done.
      unsubscribe = ledger.onChange(() => {
        nodeState.checkDrained().catch((err: unknown) => { log.error({ err }, 'node state drain check failed') })
      })
    },
    async stop () {
      unsubscribe?.()
      unsubscribe = undefined
      for (const s of started.splice(0)) await s.stop()
    }
  }
}
