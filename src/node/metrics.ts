import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { ActorObserver } from '../actor/observer.js'
import type { ActorInfo, DispatchStats } from '../actor/system.js'
import type { ConnectionStats } from '../network/index.js'
import type { PeerInfo } from '../network/peer-service.js'
import type { AllocationView } from '../services/provider/index.js'
import type { DeploymentView } from '../services/orchestrator/index.js'
import type { LedgerSnapshot } from '../services/resources/index.js'

/**
 * The node's Prometheus metrics (`GET /metrics` on the local API). One Registry per node, never
 * prom-client's global one: several nodes in one process (tests, library users) keep their own.
 *
 * Counters are bumped by the actor pipeline (ActorObserver) and the network's events; gauges of
 * state (resources, allocations, deployments, peers, mailboxes) are computed when scraped, from
 * the services themselves, so they cannot drift from what the node reports elsewhere.
 *
 * Label values are bounded: behaviour paths this node does not declare become `other`, and any
 * label fed by outside input (an error name in a remote's reply, a refusal reason) keeps at most
 * MAX_LABEL_VALUES distinct values, later ones counted as `other`. A peer sending made-up paths or
 * error names cannot grow the scrape without bound.
 */
export const MAX_LABEL_VALUES = 64

/** Invoke latencies: from a local call answered in the same turn to a deadline-long wait. */
const INVOKE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

/** What the scrape-time gauges read. Absent (spec generation): the gauges stay empty. */
export interface MetricsSources {
  actors: () => ActorInfo[]
  dispatch: () => DispatchStats
  peers: () => Promise<PeerInfo[]>
  connections: () => ConnectionStats
  ledger: () => LedgerSnapshot
  allocations: () => AllocationView[]
  deployments: () => DeploymentView[]
  nodeState: () => string
  /** Open streams by end (src/stream/). */
  streams?: () => { readers: number, writers: number }
  /** Channels of this node by role and link state (src/channel/). */
  channels?: () => Array<{ role: string, state: string }>
  node: { version: string, startedAt: number }
}

export interface NodeMetrics {
  readonly registry: Registry
  readonly observer: ActorObserver
  helloHeard: () => void
  helloSent: () => void
  /** The text format, for the scrape. */
  scrape: () => Promise<{ contentType: string, body: string }>
  /** Ends the event-loop sampler (started by the first scrape). */
  stop: () => void
}

/**
 * prom-client samples the event loop every 10 ms (its `eventLoopMonitoringPrecision`): a timer
 * waking an idle daemon 100 times a second, ~6 millicores each, most of the idle CPU of 100
 * daemons on one machine (issue 10). Its sampler is parked (this period: the longest a timer
 * takes, ~24 days) and its eight event-loop gauges replaced by `eventLoopGauges`, which keep
 * their names and meaning but sample every EVENT_LOOP_SAMPLE_MS, and only once the node has been
 * scraped: a node no one watches does not pay for watching.
 */
const PARKED_SAMPLER_MS = 2 ** 31 - 1
/** A block of the event loop longer than this is always seen; shorter ones when they overlap a sample. */
const EVENT_LOOP_SAMPLE_MS = 100
const EVENT_LOOP_GAUGES = ['lag', 'lag_min', 'lag_max', 'lag_mean', 'lag_stddev', 'lag_p50', 'lag_p90', 'lag_p99'].map(s => `dms_nodejs_eventloop_${s}_seconds`)

/**
 * prom-client's event-loop gauges, from a sampler started at the first scrape. Node's histogram
 * records each sample's whole interval; prom-client reported that (10 ms plus the delay); these
 * report the delay beyond the interval, which is what its help text says. The histogram is reset
 * at each scrape: the figures are those since the last one (none yet at the first: zeros).
 */
function eventLoopGauges (registry: Registry): { stop: () => void } {
  let sampler: IntervalHistogram | undefined
  const registers = [registry]
  const delay = (ns: number): number => Math.max(0, ns / 1e6 - EVENT_LOOP_SAMPLE_MS) / 1e3
  const gauge = (suffix: string, help: string): Gauge => new Gauge({ name: `dms_nodejs_eventloop_${suffix}_seconds`, help, registers })
  const min = gauge('lag_min', 'The minimum recorded event loop delay.')
  const max = gauge('lag_max', 'The maximum recorded event loop delay.')
  const mean = gauge('lag_mean', 'The mean of the recorded event loop delays.')
  const stddev = gauge('lag_stddev', 'The standard deviation of the recorded event loop delays.')
  const p50 = gauge('lag_p50', 'The 50th percentile of the recorded event loop delays.')
  const p90 = gauge('lag_p90', 'The 90th percentile of the recorded event loop delays.')
  const p99 = gauge('lag_p99', 'The 99th percentile of the recorded event loop delays.')
  new Gauge({
    name: 'dms_nodejs_eventloop_lag_seconds',
    help: 'Lag of event loop in seconds.',
    registers,
    // as prom-client: the time a setImmediate queued now takes to run (set when it has; the
    // scrape shows the one before) and, from the sampler, the other seven
    collect () {
      const start = process.hrtime.bigint()
      setImmediate(() => { this.set(Number(process.hrtime.bigint() - start) / 1e9) })
      if (sampler === undefined) {
        sampler = monitorEventLoopDelay({ resolution: EVENT_LOOP_SAMPLE_MS })
        sampler.enable()
      }
      const h = sampler
      const sampled = h.count > 0
      min.set(sampled ? delay(h.min) : 0)
      max.set(sampled ? delay(h.max) : 0)
      mean.set(sampled ? delay(h.mean) : 0)
      stddev.set(sampled ? h.stddev / 1e9 : 0)
      p50.set(sampled ? delay(h.percentile(50)) : 0)
      p90.set(sampled ? delay(h.percentile(90)) : 0)
      p99.set(sampled ? delay(h.percentile(99)) : 0)
      h.reset()
    }
  })
  return { stop: () => { sampler?.disable(); sampler = undefined } }
}

/** Keeps a label's distinct values under MAX_LABEL_VALUES. */
function bounded (): (v: string) => string {
  const seen = new Set<string>()
  return (v) => {
    if (seen.has(v)) return v
    if (seen.size >= MAX_LABEL_VALUES) return 'other'
    seen.add(v)
    return v
  }
}

export function createMetrics (init: { behaviors: Iterable<string> }, sources?: () => MetricsSources | undefined): NodeMetrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'dms_', eventLoopMonitoringPrecision: PARKED_SAMPLER_MS })
  for (const name of EVENT_LOOP_GAUGES) registry.removeSingleMetric(name)
  const eventLoop = eventLoopGauges(registry)
  const known = new Set(init.behaviors)
  const behavior = (be: string | undefined): string => be !== undefined && known.has(be) ? be : 'other'
  const outcomeOf = bounded()
  const invokeOutcomeOf = bounded()
  const reasonOf = bounded()
  const kindOf = bounded()
  const protocolOf = bounded()
  const src = (): MetricsSources | undefined => sources?.()
  const registers = [registry]

  const received = new Counter({ name: 'dms_envelopes_received_total', help: 'Envelopes addressed to a behaviour of this node, by behaviour and outcome (ok, or the error name it was answered with).', labelNames: ['behavior', 'outcome'], registers })
  const sent = new Counter({ name: 'dms_envelopes_sent_total', help: 'Envelopes this node\'s actors sent, by behaviour and mode (invoke, send, publish, relay for the CLI, reply).', labelNames: ['behavior', 'mode'], registers })
  const invokeDuration = new Histogram({ name: 'dms_invoke_duration_seconds', help: 'Time from sending an invoke to its reply (or failure), by behaviour and outcome.', labelNames: ['behavior', 'outcome'], buckets: INVOKE_BUCKETS, registers })
  const capChecks = new Counter({ name: 'dms_capability_checks_total', help: 'How capability questions were answered: public (none needed), self, cached (chain verified before), cold (verified now), refused; with the refusal reason.', labelNames: ['result', 'reason'], registers })
  const mailboxRefused = new Counter({ name: 'dms_mailbox_refusals_total', help: 'Envelopes a mailbox refused, by actor kind and reason (full: answered Overloaded; closed: the actor stops).', labelNames: ['kind', 'reason'], registers })
  const hello = new Counter({ name: 'dms_hello_total', help: 'Hello broadcasts heard from other peers (direction received) and published by this node (sent).', labelNames: ['direction'], registers })
  // zero from the first scrape, so that rate() works before the first hello
  hello.inc({ direction: 'received' }, 0)
  hello.inc({ direction: 'sent' }, 0)

  // Counters of the dispatcher's own stats, brought up to date at scrape time.
  const gossipSeen = { rejected: 0, ignored: 0 }
  new Counter({
    name: 'dms_gossip_refused_total',
    help: 'Gossip frames the topic validator did not accept, by verdict (reject lowers the publisher\'s score; ignore drops it quietly).',
    labelNames: ['verdict'],
    registers,
    collect () {
      const s = src()?.dispatch()
      if (s === undefined) return
      this.inc({ verdict: 'reject' }, s.gossipRejected - gossipSeen.rejected)
      this.inc({ verdict: 'ignore' }, s.gossipIgnored - gossipSeen.ignored)
      gossipSeen.rejected = s.gossipRejected
      gossipSeen.ignored = s.gossipIgnored
    }
  })

  new Gauge({
    name: 'dms_mailbox_depth',
    help: 'Messages in the mailboxes of this node\'s actors, by actor kind and state (running, queued).',
    labelNames: ['kind', 'state'],
    registers,
    collect () {
      this.reset()
      for (const a of src()?.actors() ?? []) {
        this.inc({ kind: kindOf(a.kind), state: 'running' }, a.running)
        this.inc({ kind: kindOf(a.kind), state: 'queued' }, a.queued)
      }
    }
  })
  new Gauge({
    name: 'dms_actors',
    help: 'Actors running on this node, by kind.',
    labelNames: ['kind'],
    registers,
    collect () {
      this.reset()
      for (const a of src()?.actors() ?? []) this.inc({ kind: kindOf(a.kind) })
    }
  })
  new Gauge({
    name: 'dms_peers',
    help: 'Peers this node knows (peer book and peer store) and those connected now.',
    labelNames: ['state'],
    registers,
    async collect () {
      const s = src()
      if (s === undefined) return
      const peers = await s.peers()
      this.set({ state: 'known' }, peers.length)
      this.set({ state: 'connected' }, peers.filter(p => p.connected).length)
    }
  })
  new Gauge({
    name: 'dms_libp2p_connections',
    help: 'Open libp2p connections, by direction.',
    labelNames: ['direction'],
    registers,
    collect () {
      const c = src()?.connections()
      if (c === undefined) return
      this.set({ direction: 'inbound' }, c.connections.inbound)
      this.set({ direction: 'outbound' }, c.connections.outbound)
    }
  })
  new Gauge({
    name: 'dms_libp2p_streams',
    help: 'Open libp2p streams, by protocol (the actor stream, gossipsub, identify, the DHT, ping).',
    labelNames: ['protocol'],
    registers,
    collect () {
      this.reset()
      const c = src()?.connections()
      for (const [p, n] of Object.entries(c?.streams ?? {})) this.inc({ protocol: protocolOf(p) }, n)
    }
  })

  // Resources per dimension, one gauge per unit (Prometheus: the unit is in the name).
  const ledgerStates = ['onboarded', 'reserved', 'allocated', 'free'] as const
  const dimension = (name: string, help: string, pick: (v: { cpuCores: number, ramBytes: number, diskBytes: number, gpus: unknown[] }) => number): void => {
    new Gauge({
      name,
      help,
      labelNames: ['state'],
      registers,
      collect () {
        const l = src()?.ledger()
        if (l === undefined) return
        for (const state of ledgerStates) {
          const v = l[state]
          this.set({ state }, v === null ? 0 : pick(v))
        }
      }
    })
  }
  dimension('dms_resources_cpu_cores', 'CPU cores onboarded, reserved, allocated and free (onboarded − reserved − allocated).', v => v.cpuCores)
  dimension('dms_resources_ram_bytes', 'RAM onboarded, reserved, allocated and free, in bytes.', v => v.ramBytes)
  dimension('dms_resources_disk_bytes', 'Disk onboarded, reserved, allocated and free, in bytes.', v => v.diskBytes)
  dimension('dms_resources_gpus', 'GPUs onboarded, reserved, allocated and free (devices, whole or shared).', v => v.gpus.length)

  new Gauge({
    name: 'dms_allocations',
    help: 'Allocations on this node, by status and executor.',
    labelNames: ['status', 'executor'],
    registers,
    collect () {
      this.reset()
      for (const a of src()?.allocations() ?? []) this.inc({ status: a.status, executor: a.executor })
    }
  })
  new Gauge({
    name: 'dms_allocation_restarts',
    help: 'Restarts of the allocations on this node, summed, by executor.',
    labelNames: ['executor'],
    registers,
    collect () {
      this.reset()
      for (const a of src()?.allocations() ?? []) this.inc({ executor: a.executor }, a.restarts)
    }
  })
  new Gauge({
    name: 'dms_deployments',
    help: 'Deployments this node orchestrates, by status.',
    labelNames: ['status'],
    registers,
    collect () {
      this.reset()
      for (const d of src()?.deployments() ?? []) this.inc({ status: d.status })
    }
  })
  new Gauge({
    name: 'dms_streams_open',
    help: 'Streams open on this node, by the end this node holds (reader or writer); back to 0 once every follow ended.',
    labelNames: ['role'],
    registers,
    collect () {
      const n = src()?.streams?.()
      if (n === undefined) return
      this.set({ role: 'reader' }, n.readers)
      this.set({ role: 'writer' }, n.writers)
    }
  })
  new Gauge({
    name: 'dms_channels_open',
    help: 'Reliable channels of this node, by the end it holds (sender or receiver) and the state of the link to the other node (connected, connecting, disconnected).',
    labelNames: ['role', 'state'],
    registers,
    collect () {
      const list = src()?.channels?.()
      if (list === undefined) return
      this.reset()
      const counts = new Map<string, number>()
      for (const c of list) counts.set(`${c.role}\u0000${c.state}`, (counts.get(`${c.role}\u0000${c.state}`) ?? 0) + 1)
      for (const [k, n] of counts) { const [role, state] = k.split('\u0000'); this.set({ role, state }, n) }
    }
  })
  new Gauge({
    name: 'dms_node_state',
    help: 'The node state: 1 for the current one (ready, standby, stopping, stopped).',
    labelNames: ['state'],
    registers,
    collect () {
      const s = src()
      if (s === undefined) return
      this.reset()
      this.set({ state: s.nodeState() }, 1)
    }
  })
  new Gauge({
    name: 'dms_node_info',
    help: 'Always 1; the dms version as a label.',
    labelNames: ['version'],
    registers,
    collect () {
      const s = src()
      if (s !== undefined) this.set({ version: s.node.version }, 1)
    }
  })
  new Gauge({
    name: 'dms_node_start_time_seconds',
    help: 'When the node started, in Unix seconds.',
    registers,
    collect () {
      const s = src()
      if (s !== undefined) this.set(s.node.startedAt / 1000)
    }
  })

  const observer: ActorObserver = {
    handled: (be, outcome) => { received.inc({ behavior: behavior(be), outcome: outcomeOf(outcome) }) },
    sent: (be, mode) => { sent.inc({ behavior: mode === 'reply' ? 'reply' : behavior(be), mode }) },
    invoked: (be, outcome, seconds) => { invokeDuration.observe({ behavior: behavior(be), outcome: invokeOutcomeOf(outcome) }, seconds) },
    capability: (result, reason) => { capChecks.inc({ result, reason: reason === undefined ? '' : reasonOf(reason) }) },
    mailboxRefused: (kind, reason) => { mailboxRefused.inc({ kind: kindOf(kind), reason }) }
  }

  return {
    registry,
    observer,
    helloHeard: () => { hello.inc({ direction: 'received' }) },
    helloSent: () => { hello.inc({ direction: 'sent' }) },
    scrape: async () => ({ contentType: registry.contentType, body: await registry.metrics() }),
    stop: () => { eventLoop.stop() }
  }
}

/** `specs/metrics.md`: every metric of a node's registry, as registered (scripts/gen-specs.ts). */
export async function metricsMarkdown (): Promise<string> {
  const m = createMetrics({ behaviors: [] })
  const json = await m.registry.getMetricsAsJSON()
  m.stop()
  const labels = new Map(m.registry.getMetricsAsArray().map(x => [x.name, (x as unknown as { labelNames?: string[] }).labelNames ?? []]))
  const rows = json
    .map(j => ({ name: j.name, type: String(j.type), help: j.help, labels: labels.get(j.name) ?? [] }))
    .sort((a, b) => a.name.localeCompare(b.name))
  const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ')
  return [
    '# dms metrics',
    '',
    '<!-- Generated by `npm run specs` from src/node/metrics.ts. Do not edit: CI fails on drift. -->',
    '',
    '`GET /metrics` on the daemon\'s local API (127.0.0.1, the same Host and Origin checks as the rest of',
    'the API) answers in the Prometheus text format. Each node has its own registry. Label values',
    'are bounded: behaviour paths the node does not declare are counted as `other`, and labels fed',
    `by outside input keep at most ${MAX_LABEL_VALUES} distinct values (later ones: \`other\`). Gauges of state are`,
    'computed at scrape time from the services themselves. `dms_process_*` and `dms_nodejs_*` are',
    'prom-client\'s default Node.js process metrics, with the `dms_` prefix, except that the event',
    `loop is sampled every ${EVENT_LOOP_SAMPLE_MS} ms (not 10) and only from the first scrape on: the`,
    '`dms_nodejs_eventloop_lag_*` gauges are the delays beyond that period since the previous scrape',
    '(zeros at the first). A node no one scrapes is not woken to sample.',
    '',
    '| name | type | labels | help |',
    '|---|---|---|---|',
    ...rows.map(r => `| \`${r.name}\` | ${r.type} | ${r.labels.map(l => `\`${l}\``).join(', ')} | ${cell(r.help)} |`),
    ''
  ].join('\n')
}
