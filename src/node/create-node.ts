import '../lib/polyfill.js'
import { mkdir } from 'node:fs/promises'
import { resolve } from 'node:path'
import type { Logger } from 'pino'
import { allocationBehaviors, behaviors as builtinBehaviors, orchestratorBehaviors, portAllocatorBehaviors, resourceManagerBehaviors } from '../../behaviors/index.js'
import type { Services } from '../../behaviors/services.js'
import type { z } from 'zod'
import type { AnyBehavior, BehaviorDeclaration } from '../actor/behavior.js'
import { ActorSystem, type Actor, type CallOptions, type Destination, type DispatchStats, type RelayReply } from '../actor/system.js'
import type { Handle } from '../actor/types.js'
import type { Identity } from '../identity/identity.js'
import { ActorKeys } from '../identity/actor-keys.js'
import { Keystore } from '../identity/keystore.js'
import { NotRunning } from '../lib/errors.js'
import { logControlOf, silentLogger, type LogControl } from '../lib/log.js'
import { HELLO_TOPIC, createNetwork, type Network } from '../network/index.js'
import { createCapabilities, type Capabilities } from '../security/index.js'
import { createMachineServices, type MachineServices } from '../services/index.js'
import { ledgerThroughActor, portsThroughActor } from '../services/machine-actors.js'
import { createAllocationRuntime } from '../services/allocations/index.js'
import { createExecutors } from '../services/executors/index.js'
import { createProviderService, type ProviderService } from '../services/provider/index.js'
import { createDeploymentService, type DeploymentService } from '../services/orchestrator/index.js'
import { createJobService, type JobService } from '../services/jobs/index.js'
import { openDb, type Db } from '../store/db.js'
import { createChannelService, type ChannelService, type ChannelServiceInit } from '../channel/index.js'
import { createStreamService, type StreamService, type StreamServiceInit } from '../stream/index.js'
import { resolveConfig, type Config, type ConfigInput } from './config.js'
import { createNodeEvents, type NodeEvents } from './events.js'
import type { NodeInfo } from './info.js'
import { createMetrics, type MetricsSources, type NodeMetrics } from './metrics.js'
import type { LogChunk, LogStream } from '../services/allocations/index.js'
import type { CapService } from '../security/service.js'
import type { NodeStateService } from '../services/node-state/index.js'
import { VERSION } from './version.js'
import { createUiAuth, type UiAuth } from '../api/ui-auth.js'

export interface NodeOptions {
  /** Data directory: keys (unless `identity` is given), capability anchors, the level db. */
  dataDir: string
  /** The node's key; by default loaded (or created on first run) from the keystore's `dms` context. */
  identity?: Identity
  /** Keystore passphrase, when `identity` is not given. */
  passphrase?: string
  /** Configuration over the defaults (already merged with config.json/env by the daemon). */
  config?: ConfigInput
  /** Extra behaviours beside the built-in ones (library users). */
  behaviors?: readonly AnyBehavior[]
  log?: Logger
  now?: () => number
  /** Reliable channels: heartbeat interval and misses, window and outbox defaults (specs/channel.md). */
  channels?: ChannelServiceInit
  /** Streams: default window, stall bound, call deadline (specs/streams.md); liveness is the channels' heartbeat. */
  streams?: StreamServiceInit
}

/** A started node. */
export interface Node {
  readonly peerId: string
  readonly did: string
  /** The root actor's handle. */
  readonly self: Handle
  readonly config: Config
  addrs: () => string[]
  /** Request–reply to a behaviour on `dest` (a handle, DID or PeerId); `timeout` is mandatory. */
  invoke: <T = unknown>(dest: Destination, behavior: string, payload: unknown, opts: CallOptions) => Promise<T>
  /** One-way message. */
  send: (dest: Destination, behavior: string, payload: unknown, opts?: CallOptions) => Promise<void>
  /** Broadcast over gossipsub. */
  publish: (topic: string, behavior: string, payload: unknown, opts?: CallOptions) => Promise<void>
  /** Adds a behaviour to the root actor at run time (a broadcast one subscribes to its topic). */
  handle: <N extends keyof Services, Req extends z.ZodType, Res extends z.ZodType>(decl: BehaviorDeclaration<Services, N, Req, Res>) => void
  /** Relays an envelope signed elsewhere (the local API). */
  relay: (frame: Uint8Array, mode: 'send' | 'invoke' | 'broadcast') => Promise<RelayReply | undefined>
  stats: () => DispatchStats
  /** Reliable ordered channels between actors: `open` to send, `receive` to handle (specs/channel.md). */
  readonly channels: ChannelService
  /** Streams between actors: `open` to read one, `accept` (in a behaviour) to write; `relay` for the local API (specs/streams.md). */
  readonly streams: StreamService
  /** The root actor, for spawning children. */
  readonly actors: { root: Actor, system: ActorSystem }
  /**
   * What the daemon shows operators: the event stream, the metrics registry, the log levels and
   * an allocation's output (read-only; the dashboard's log view).
   */
  readonly observe: {
    events: NodeEvents
    metrics: NodeMetrics
    logs: LogControl
    /** The dashboard's logins: tokens issued by `/dms/node/ui/token`, traded for sessions by the API. */
    ui: UiAuth
    allocationLogs: (id: string, o: { stream: LogStream, offset: number, maxBytes: number, wait: boolean, signal: AbortSignal }) => Promise<LogChunk & { ended: boolean }>
  }
  stop: () => Promise<void>
}

/**
 * The composition root: builds every part in order and tears them down in reverse.
 * store → identity → capabilities → machine services → network → actor system → start.
 */
export async function createNode (opts: NodeOptions): Promise<Node> {
  const log = opts.log ?? silentLogger()
  const dataDir = resolve(opts.dataDir)
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  const config = resolveConfig(opts.config ?? {})
  const now = opts.now ?? Date.now

  const identity = opts.identity ?? await new Keystore(dataDir).loadOrCreate('dms', requirePassphrase(opts.passphrase))
  const events = createNodeEvents({ now })
  const logs = logControlOf(log)
  // in memory only: a restart signs every browser out (as it should: nothing on disk to steal)
  const ui = createUiAuth({ now })
  // Behaviour paths this node declares: the metrics' `behavior` label takes these and `other`.
  const declared = [...builtinBehaviors, ...allocationBehaviors, ...orchestratorBehaviors, ...(opts.behaviors ?? [])].map(b => b.path)
  let metricSources: MetricsSources | undefined
  const metrics = createMetrics({ behaviors: declared }, () => metricSources)
  const closers: Array<() => Promise<void>> = [async () => { metrics.stop() }]
  const closeAll = async (): Promise<void> => {
    for (const close of closers.reverse()) {
      try { await close() } catch (err) { log.warn({ err }, 'error while stopping') }
    }
  }

  try {
    const db: Db = await openDb(resolve(dataDir, 'db'))
    closers.push(async () => { await db.close() })

    const caps: Capabilities = await createCapabilities({ dataDir, context: 'dms', selfDid: identity.did, db, log: log.child({ part: 'caps' }) })
    await caps.start()
    closers.push(async () => { await caps.stop() })

    const machine: MachineServices = createMachineServices({ dataDir, ports: config.ports }, { db, log: log.child({ part: 'resources' }) })
    await machine.start()
    closers.push(async () => { await machine.stop() })

    const network: Network = await createNetwork({
      listen: config.listen,
      bootstrap: config.bootstrap,
      mdns: config.mdns,
      maxFrameBytes: config.maxFrameBytes,
      helloIntervalMs: config.helloIntervalMs
    }, { identity, db, log: log.child({ part: 'network' }) })

    const startedAt = now()
    const info: NodeInfo = { did: identity.did, peerId: identity.peerId, version: VERSION, startedAt, addrs: () => network.addrs() }
    // What runs workloads here: the executors that work on this machine, the allocation runtime
    // (records, supervision, logs, recovery) and the provider side of deployments.
    const executors = createExecutors({ nodeId: identity.peerId, dataDir }, { log: log.child({ part: 'executors' }) })
    const actorKeys = new ActorKeys(db, identity)
    let provider: ProviderService
    const runtime = createAllocationRuntime({ dir: resolve(dataDir, 'allocations') }, {
      db,
      log: log.child({ part: 'allocations' }),
      executors: executors.available,
      clock: now,
      // a workload that ended for good gives back its resources and ports
      onEnded: async (record) => { await provider.releaseReservation(record.id) }
    })
    // onChange fires on every record write (health checks too): an event only when the status moved
    const lastStatus = new Map<string, string>()
    const unwatchAllocations = runtime.onChange((r) => {
      if (lastStatus.get(r.id) === r.status) return
      events.emit('allocation.status', { id: r.id, status: r.status, reason: r.reason.slice(0, 200), executor: r.executor })
      if (r.status === 'completed' || r.status === 'failed' || r.status === 'stopped') lastStatus.delete(r.id); else lastStatus.set(r.id, r.status)
    })
    closers.push(async () => { unwatchAllocations() })
    let onboarded = JSON.stringify(machine.resources.snapshot().onboarded)
    const unwatchLedger = machine.resources.onChange((snap) => {
      const now = JSON.stringify(snap.onboarded)
      if (now === onboarded) return
      onboarded = now
      events.emit('onboarding.changed', { onboarded: snap.onboarded !== null, ...(snap.onboarded !== null ? { resources: { cpuCores: snap.onboarded.cpuCores, ramBytes: snap.onboarded.ramBytes, diskBytes: snap.onboarded.diskBytes, gpus: snap.onboarded.gpus.length } } : {}) })
    })
    closers.push(async () => { unwatchLedger() })
    // The ledger and the port table are owned by child actors (spawned below, once the system
    // exists): the node's behaviours read them directly and send every change to their owner.
    let owners: { resources: Actor, ports: Actor } | undefined
    const ownerOf = (which: 'resources' | 'ports') => () => {
      if (owners === undefined) throw new NotRunning('the node is starting')
      return { from: system.root, to: owners[which] }
    }
    const resources = ledgerThroughActor(machine.resources, { route: ownerOf('resources'), timeoutMs: OWNER_CALL_TIMEOUT_MS })
    const ports = portsThroughActor(machine.ports, { route: ownerOf('ports'), timeoutMs: OWNER_CALL_TIMEOUT_MS })
    provider = createProviderService({
      db,
      log: log.child({ part: 'provider' }),
      clock: now,
      spawn: (init) => system.spawn(init),
      node: identity,
      actorKeys,
      resources,
      ports,
      runtime,
      allocationBehaviors: allocationBehaviors as unknown as readonly AnyBehavior[],
      streams: () => streams,
      channels: () => channels
    })
    const deployments: DeploymentService = createDeploymentService({
      db,
      log: log.child({ part: 'deployments' }),
      clock: now,
      identity,
      resources,
      ports,
      nodeState: machine.nodeState,
      executors: () => executors.status(),
      spawn: (init) => system.spawn(init),
      actorKeys,
      root: () => system.root,
      delegatedProofs: (issuer, subject, lifetimeMs) => caps.delegatedProofs(issuer, subject, lifetimeMs),
      connectedPeers: async () => (await network.peers.list()).filter(p => p.connected).map(p => p.id),
      remoteCommits: () => provider.remoteCommits(),
      releaseCommit: async (ensembleId, owner) => { await provider.revert(owner, ensembleId) },
      orchestratorBehaviors: orchestratorBehaviors as unknown as readonly AnyBehavior[],
      wantedCheckMs: config.wantedCheckMs,
      channels: () => channels,
      onChange: (() => {
        const seen = new Map<string, number>()
        return (r) => {
          if (seen.get(r.ensembleId) === r.transitionCount) return
          seen.set(r.ensembleId, r.transitionCount)
          events.emit('deployment.status', { ensembleId: r.ensembleId, status: r.status, reason: r.reason.slice(0, 200) })
        }
      })()
    })
    const jobs: JobService = createJobService({
      db,
      log: log.child({ part: 'jobs' }),
      clock: now,
      dataDir,
      deployments,
      root: () => system.root,
      selfPeer: identity.peerId,
      connectedPeers: async () => (await network.peers.list()).filter(p => p.connected).map(p => p.id)
    })
    const channels: ChannelService = createChannelService(opts.channels ?? {}, {
      db,
      root: () => system.root,
      resolve: (dest) => system.resolveDestination(dest),
      log: log.child({ part: 'channels' })
    })
    const streams: StreamService = createStreamService(opts.streams ?? {}, {
      root: () => system.root,
      peerId: identity.peerId,
      channels,
      resolve: (dest) => system.resolveDestination(dest),
      relay: async (frame, mode) => await system.relay(frame, mode),
      log: log.child({ part: 'streams' })
    })
    const services: Services = {
      node: info,
      peers: network.peers,
      caps: caps.service,
      resources,
      ports,
      hardware: machine.hardware,
      nodeState: watchNodeState(machine.nodeState, events),
      actors: { list: () => system.list() },
      executors: { status: () => executors.status() },
      provider,
      deployments,
      jobs,
      channels,
      streams,
      events,
      logger: logs,
      ui
    }
    services.caps = watchCaps(caps.service, events)
    const system: ActorSystem = new ActorSystem({
      identity,
      transport: network.transport,
      authorizer: caps.authorizer,
      proofs: caps.proofs,
      behaviors: [...builtinBehaviors, ...(opts.behaviors ?? [])] as readonly AnyBehavior[],
      services,
      now,
      log: log.child({ part: 'actor' }),
      signAllEnvelopes: config.signAllEnvelopes,
      observer: metrics.observer,
      limits: {
        perSenderRate: config.limits.perSenderRate,
        perSenderBurst: config.limits.perSenderBurst,
        concurrency: config.limits.mailboxConcurrency,
        capacity: config.limits.mailboxCapacity
      }
    })
    closers.push(async () => { system.stop() })
    const machineServices = { resources: machine.resources, ports: machine.ports }
    owners = {
      resources: system.spawn({ inbox: 'resources', kind: 'resource-manager', identity: await actorKeys.loadOrCreate('resources'), behaviors: resourceManagerBehaviors as readonly AnyBehavior[], services: machineServices, mailbox: { concurrency: 1 } }),
      ports: system.spawn({ inbox: 'ports', kind: 'port-allocator', identity: await actorKeys.loadOrCreate('ports'), behaviors: portAllocatorBehaviors as readonly AnyBehavior[], services: machineServices, mailbox: { concurrency: 1 } })
    }
    await executors.start()
    closers.push(async () => { await executors.stop() })
    // Recovery first (re-adopt, fail, release, stop orphans), then one actor per allocation.
    await provider.start()
    closers.push(async () => { await provider.stop() })
    const unwatch = network.transport.onPeerDisconnect(peer => { system.peerGone(peer) })
    closers.push(async () => { unwatch() })
    const unwatchPeers = network.onPeerEvent((e) => {
      if (e.type === 'hello.heard') {
        metrics.helloHeard()
        events.emit(e.type, { peer: e.peer, did: e.did })
      } else {
        events.emit(e.type, { peer: e.peer })
      }
    })
    closers.push(async () => { unwatchPeers() })
    metricSources = {
      actors: () => system.list(),
      dispatch: () => system.stats,
      peers: async () => await network.peers.list(),
      connections: () => network.connectionStats(),
      ledger: () => machine.resources.snapshot(),
      allocations: () => provider.list(),
      deployments: () => deployments.list(),
      nodeState: () => machine.nodeState.get().state,
      streams: () => streams.count(),
      channels: () => channels.list(),
      node: { version: VERSION, startedAt }
    }

    network.setHelloCallbacks({
      announce: async () => {
        await system.root.publish(HELLO_TOPIC, '/broadcast/hello', { did: identity.did, addrs: network.addrs() }, { timeout: HELLO_LIFETIME_MS })
        metrics.helloSent()
      },
      greet: async (peerId: string) => { await system.root.invoke(peerId, '/public/hello', {}, { timeout: HELLO_LIFETIME_MS }) }
    })
    await network.start()
    closers.push(async () => { await network.stop() })
    caps.attach(system.root)
    // Deployments last: resumed orchestrators publish and call providers at once.
    await deployments.start()
    closers.push(async () => { await deployments.stop() })
    // Jobs after deployments (their parts are deployments); stopped before them.
    await jobs.start()
    closers.push(async () => { await jobs.stop() })
    // Channels stop first: their timers and calls end before the actors and the db they use.
    closers.push(async () => { await channels.stop() })
    // Streams before channels: their cancels go out while the actors still run, then their holds on the links go.
    closers.push(async () => { await streams.stop() })
    events.emit('node.started', { peerId: identity.peerId, did: identity.did, version: VERSION, state: machine.nodeState.get().state })

    let stopped = false
    return {
      peerId: identity.peerId,
      did: identity.did,
      self: system.root.handle,
      config,
      addrs: () => network.addrs(),
      invoke: (dest, behavior, payload, o) => system.root.invoke(dest, behavior, payload, o),
      send: async (dest, behavior, payload, o) => { await system.root.send(dest, behavior, payload, o) },
      publish: async (topic, behavior, payload, o) => { await system.root.publish(topic, behavior, payload, o) },
      handle: (decl) => { system.root.register(decl as unknown as AnyBehavior, services) },
      relay: async (frame, mode) => {
        if (stopped) throw new NotRunning('the node is stopping')
        return await system.relay(frame, mode)
      },
      stats: () => system.stats,
      channels,
      streams,
      actors: { root: system.root, system },
      observe: {
        events,
        metrics,
        logs,
        ui,
        allocationLogs: async (id, o) => {
          const chunk = await runtime.readLogs(id, o)
          const ended = (): boolean => { const s = runtime.get(id)?.status; return s === undefined || s === 'completed' || s === 'failed' || s === 'stopped' }
          if (!o.wait || chunk.data !== '' || !chunk.eof || ended()) return { ...chunk, ended: ended() && chunk.eof }
          await runtime.waitForLogs(id, { stream: o.stream, offset: o.offset, signal: o.signal })
          const next = await runtime.readLogs(id, o)
          return { ...next, ended: ended() && next.eof }
        }
      },
      stop: async () => {
        if (stopped) return
        stopped = true
        await closeAll()
      }
    }
  } catch (err) {
    await closeAll()
    throw err
  }
}

/**
 * Deadline of the node's calls to the actors that own its ledger and port table: a change waits
 * behind the ones before it (one at a time), and onboarding probes the hardware.
 */
const OWNER_CALL_TIMEOUT_MS = 60_000

/** A hello or its handshake is worth nothing after this long. */
const HELLO_LIFETIME_MS = 10_000

function requirePassphrase (p: string | undefined): string {
  if (p === undefined || p === '') throw new NotRunning('createNode needs `identity` or `passphrase` to open the node key')
  return p
}

/** The node-state service, telling the event stream when the state moved. */
function watchNodeState (inner: NodeStateService, events: NodeEvents): NodeStateService {
  const told = (before: string, after: string): void => {
    if (before !== after) events.emit('node.state', { state: after, previous: before })
  }
  return {
    start: async () => { await inner.start() },
    stop: async () => { await inner.stop() },
    get: () => inner.get(),
    set: async (state) => {
      const r = await inner.set(state)
      told(r.previous, r.state)
      return r
    },
    refusal: (kind) => inner.refusal(kind),
    setLabels: async (labels) => await inner.setLabels(labels),
    removeLabels: async (keys) => await inner.removeLabels(keys),
    checkDrained: async () => {
      const before = inner.get().state
      const after = await inner.checkDrained()
      told(before, after)
      return after
    }
  }
}

/**
 * The capability service, telling the event stream about anchors added or removed and tokens
 * revoked: kinds and token ids, never a token's text.
 */
function watchCaps (inner: CapService, events: NodeEvents): CapService {
  return {
    context: inner.context,
    list: async () => await inner.list(),
    addAnchor: async (kind, value) => {
      const v = await inner.addAnchor(kind, value)
      events.emit('cap.anchor.added', { kind })
      return v
    },
    removeAnchor: async (kind, ref) => {
      const v = await inner.removeAnchor(kind, ref)
      events.emit('cap.anchor.removed', { kind })
      return v
    },
    revoke: async (record) => {
      const r = await inner.revoke(record)
      events.emit('cap.revoked', { id: r.id, issuer: record.iss })
      return r
    },
    receiveRevocation: async (record) => {
      const r = await inner.receiveRevocation(record)
      if (r.fresh) events.emit('cap.revoked', { id: r.id, issuer: record.iss, via: 'gossip' })
      return r
    },
    checkRevocation: (record) => inner.checkRevocation(record)
  }
}
