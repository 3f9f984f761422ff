import { HELLO_PEERS_PER_INTERVAL } from '../network/constants.js'
import { realNow, VirtualClock } from './clock.js'
import { SimNetwork, type SimNetOptions } from './network.js'
import { SimNode, seededIdentity } from './node.js'

export interface SimOptions {
  nodes: number
  seed: number
  /** The hello interval (the daemon's `helloIntervalMs`). */
  intervalMs: number
  /** K of the rate-scaled hello; Infinity: today's every-interval hello (the baseline). */
  peersPerInterval: number
  /** Peer book bound per node; below `nodes` the announcer is told the network's size (see SimNode). */
  peerBookMax: number
  /** Sign every envelope (Ed25519 per envelope, as `signAllEnvelopes`); default: as a daemon. */
  signAll: boolean
  net: Partial<SimNetOptions>
}

export const DEFAULT_SIM: SimOptions = {
  nodes: 100,
  seed: 1,
  intervalMs: 30_000,
  peersPerInterval: HELLO_PEERS_PER_INTERVAL,
  peerBookMax: 10_000,
  signAll: false,
  net: {}
}

export interface TrafficFigures {
  /** Per node per second, averaged over the live nodes. */
  sent: number
  received: number
  bytesSent: number
  bytesReceived: number
}

/**
 * A network of simulated nodes in this process on a virtual clock (clock.ts): the real actor
 * system, hello and peer book of each node (node.ts) over a simulated transport and gossip
 * (network.ts). `create()` installs the virtual clock process-wide; `close()` removes it.
 */
export class Simulation {
  readonly clock: VirtualClock
  readonly net: SimNetwork
  readonly nodes: SimNode[] = []
  readonly opts: SimOptions
  private readonly heardBy = new Map<string, Set<number>>()
  private readonly wallStart = realNow()

  private constructor (opts: SimOptions) {
    this.opts = opts
    this.clock = new VirtualClock(opts.seed)
    this.net = new SimNetwork(this.clock, opts.net)
  }

  /**
   * Builds `nodes` nodes. `warm`: they start as a converged network (each knows the others, or
   * `peerBookMax` of them, greeted both ways) and announce first at a random point of their
   * first period; else each announces at start, as daemons do.
   */
  static async create (partial: Partial<SimOptions> = {}, warm = true): Promise<Simulation> {
    const sim = new Simulation({ ...DEFAULT_SIM, ...partial, net: { ...DEFAULT_SIM.net, ...partial.net } })
    sim.clock.install()
    try {
      sim.net.quiet = warm
      for (let i = 0; i < sim.opts.nodes; i++) await sim.addNode()
      sim.net.quiet = false
      if (warm) {
        const all = sim.nodes.map(n => ({ peerId: n.identity.peerId, did: n.identity.did }))
        for (const n of sim.nodes) await n.know(sim.sample(all, sim.opts.peerBookMax))
      }
      for (const n of sim.nodes) n.start(!warm)
    } catch (err) {
      sim.clock.uninstall()
      throw err
    }
    return sim
  }

  /** `k` of `all` at random (all of them when k ≥ its length). */
  private sample<T> (all: T[], k: number): T[] {
    if (k >= all.length) return all
    const a = [...all]
    for (let i = 0; i < k; i++) {
      const j = i + Math.floor(this.clock.random() * (a.length - i))
      ;[a[i], a[j]] = [a[j], a[i]]
    }
    return a.slice(0, k)
  }

  private async addNode (): Promise<SimNode> {
    const identity = await seededIdentity(this.clock.random)
    const endpoint = this.net.endpoint(identity.peerId)
    const index = this.nodes.length
    const capped = this.opts.peerBookMax < this.opts.nodes
    const node = await SimNode.create(identity, endpoint, {
      intervalMs: this.opts.intervalMs,
      peersPerInterval: this.opts.peersPerInterval,
      peerBookMax: this.opts.peerBookMax,
      signAll: this.opts.signAll,
      // a capped book cannot count the network: say what a full one (10,000) would hold
      ...(capped ? { knownPeers: () => this.live().length - 1 } : {})
    })
    node.peers.onHello = (peerId) => { this.heardBy.get(peerId)?.add(index) }
    this.nodes.push(node)
    return node
  }

  /** Indices of the nodes alive now. */
  live (): number[] { return this.nodes.flatMap((n, i) => n.endpoint.alive ? [i] : []) }

  /** Advances virtual time by `ms` (or until `stop()`, checked once per instant). */
  async run (ms: number, stop?: () => boolean): Promise<void> {
    await this.clock.runUntil(this.clock.now + ms, stop)
  }

  /** Zeroes every traffic counter (the measure starts now). */
  resetTraffic (): void {
    for (const n of this.nodes) Object.assign(n.endpoint.traffic, { sent: 0, received: 0, bytesSent: 0, bytesReceived: 0 })
  }

  /** Traffic per live node per second over the last `ms` (since `resetTraffic()`). */
  traffic (ms: number): TrafficFigures {
    const live = this.live()
    const sum = { sent: 0, received: 0, bytesSent: 0, bytesReceived: 0 }
    for (const i of live) {
      const t = this.nodes[i].endpoint.traffic
      sum.sent += t.sent; sum.received += t.received; sum.bytesSent += t.bytesSent; sum.bytesReceived += t.bytesReceived
    }
    const d = Math.max(1, live.length) * ms / 1000
    return { sent: sum.sent / d, received: sum.received / d, bytesSent: sum.bytesSent / d, bytesReceived: sum.bytesReceived / d }
  }

  /** A new node joins (subscribes, announces at start): its index. */
  async join (): Promise<number> {
    const n = await this.addNode()
    const index = this.nodes.length - 1
    this.heardBy.set(n.identity.peerId, new Set())
    n.start(true)
    return index
  }

  /** Live nodes (other than it) that recorded the node's hello since it joined or was watched. */
  knownBy (index: number): number {
    const set = this.heardBy.get(this.nodes[index].identity.peerId)
    if (set === undefined) return 0
    return this.live().filter(i => i !== index && set.has(i)).length
  }

  /** Starts counting who hears node `index`'s hellos from now on. */
  watch (index: number): void { this.heardBy.set(this.nodes[index].identity.peerId, new Set()) }

  /**
   * Runs until every live node heard node `index` (recorded its hello), at most `boundMs`:
   * the virtual ms it took, or undefined if the bound passed first.
   */
  async untilKnownByAll (index: number, boundMs: number): Promise<number | undefined> {
    const t0 = this.clock.now
    const all = (): boolean => this.knownBy(index) >= this.live().length - 1
    if (!all()) await this.run(boundMs, all)
    return all() ? this.clock.now - t0 : undefined
  }

  kill (index: number): void { this.net.kill(index) }

  /** Whether `holder`'s peer book has node `index`. */
  async knows (holder: number, index: number): Promise<boolean> {
    return await this.nodes[holder].book.get(this.nodes[index].identity.peerId) !== undefined
  }

  async peerBookSizes (): Promise<{ mean: number, min: number, max: number }> {
    let sum = 0; let min = Infinity; let max = 0
    const live = this.live()
    for (const i of live) {
      const s = await this.nodes[i].book.size()
      sum += s; min = Math.min(min, s); max = Math.max(max, s)
    }
    return { mean: sum / Math.max(1, live.length), min: live.length > 0 ? min : 0, max }
  }

  /** Real time since `create()`, ms. */
  wallMs (): number { return realNow() - this.wallStart }

  async close (): Promise<void> {
    try {
      const stopped = Promise.all(this.nodes.map(async n => { await n.stop() }))
      // an announce in flight gets the announcer's stop bound (2 s) of virtual time
      await this.clock.runUntil(this.clock.now + 3_000)
      await stopped
    } finally {
      this.clock.uninstall()
    }
  }
}

