import type { Logger } from '../lib/log.js'
import {
  HELLO_EXPIRY_PERIODS, HELLO_JITTER, HELLO_PEERS_PER_INTERVAL, HELLO_SCORE_MUTUAL, HELLO_SCORE_NONE, HELLO_SCORE_ONE_SIDED, HELLO_TOPIC, MAX_HANDSHAKES
} from './constants.js'

/**
 * What the actor layer gives the network so it can say hello; the network decides *when*.
 *
 * - `announce()` publishes this node's `/broadcast/hello` envelope (its DID and addresses) on
 *   `/nunet/hello`. Called at start, whenever a peer subscribes to the hello topic, and every
 *   `helloIntervalMs`.
 * - `greet(peerId)` invokes `/public/hello` on that peer's node actor and resolves when it
 *   answers. Called once per connection for each peer whose hello was heard.
 *
 * Envelopes are built and signed by the actor layer, which the network must not know; hence
 * callbacks, installed with `network.setHelloCallbacks()` before `network.start()`.
 */
export interface HelloCallbacks {
  announce: () => Promise<void>
  greet: (peerId: string) => Promise<void>
}

interface HandshakeState {
  /** We heard this peer's `/broadcast/hello`. */
  heard: boolean
  /** This peer invoked our `/public/hello`. */
  greetedUs: boolean
  /** This peer answered our `/public/hello` invocation. */
  answered: boolean
  /** We greeted (or are greeting) it on its current connection. */
  greeted: boolean
}

/**
 * The hello handshake per peer and the gossipsub application score it gives (NuNet DMS's rule):
 * mutual (we heard their hello, and they greeted us or answered our greeting) scores highest,
 * one-sided lower, none zero. Held in memory: a restart re-runs the handshake within seconds.
 * Bounded (`maxPeers`): every hello from a new key adds an entry, so the least recently touched
 * beyond the bound is forgotten.
 */
export class Handshakes {
  /** Least recently touched first (a touch re-inserts). */
  private readonly peers = new Map<string, HandshakeState>()

  constructor (private readonly maxPeers = MAX_HANDSHAKES) {}

  private state (peerId: string): HandshakeState {
    let s = this.peers.get(peerId)
    if (s === undefined) {
      s = { heard: false, greetedUs: false, answered: false, greeted: false }
    } else {
      this.peers.delete(peerId)
    }
    this.peers.set(peerId, s)
    if (this.peers.size > this.maxPeers) {
      const oldest = this.peers.keys().next().value
      if (oldest !== undefined) this.peers.delete(oldest)
    }
    return s
  }

  /** Peers whose handshake state is held. */
  get size (): number { return this.peers.size }

  heard (peerId: string): void { this.state(peerId).heard = true }
  hasGreetedUs (peerId: string): boolean { return this.peers.get(peerId)?.greetedUs === true }

  /** Records a greeting; true when it is news (the first from this peer since we met it). */
  greetedUs (peerId: string): boolean {
    const s = this.state(peerId)
    if (s.greetedUs) return false
    s.greetedUs = true
    return true
  }
  answered (peerId: string): void { this.state(peerId).answered = true }

  /** True once per connection: the caller should greet now. */
  claimGreeting (peerId: string): boolean {
    const s = this.state(peerId)
    if (s.greeted) return false
    s.greeted = true
    return true
  }

  /** A greeting failed: allow the next hello to try again. */
  releaseGreeting (peerId: string): void { this.state(peerId).greeted = false }

  /** The peer's last connection closed: greet again after it reconnects. */
  disconnected (peerId: string): void {
    const s = this.peers.get(peerId)
    if (s !== undefined) s.greeted = false
  }

  /** The peer left the peer book: its handshake goes too. */
  forget (peerId: string): void { this.peers.delete(peerId) }

  appScore (peerId: string): number {
    const s = this.peers.get(peerId)
    if (s === undefined) return HELLO_SCORE_NONE
    const theyGreeted = s.greetedUs || s.answered
    if (s.heard && theyGreeted) return HELLO_SCORE_MUTUAL
    if (s.heard || theyGreeted) return HELLO_SCORE_ONE_SIDED
    return HELLO_SCORE_NONE
  }

  known (): string[] { return [...this.peers.keys()] }
}

type SubscriptionChange = CustomEvent<{ peerId: { toString: () => string }, subscriptions: Array<{ topic: string, subscribe: boolean }> }>

/** The part of gossipsub the announcer listens to. */
export interface SubscriptionEvents {
  addEventListener: (type: 'subscription-change', listener: (evt: SubscriptionChange) => void) => void
  removeEventListener: (type: 'subscription-change', listener: (evt: SubscriptionChange) => void) => void
}

/**
 * A peer's subscription reaches us on *its* outbound gossipsub stream, possibly before ours to
 * it is open; a message published then is not sent to that peer. Gossipsub keeps its outbound
 * streams in `streamsOutbound` (not on its public interface): the announcer waits for that entry,
 * checking every HELLO_STREAM_CHECK_MS, and announces anyway after HELLO_STREAM_WAIT_MAX checks.
 */
interface OutboundStreams { streamsOutbound: Map<string, unknown> }
function hasOutboundStreams (p: object): p is OutboundStreams {
  return (p as Partial<OutboundStreams>).streamsOutbound instanceof Map
}
const HELLO_STREAM_CHECK_MS = 25
const HELLO_STREAM_WAIT_MAX = 80 // 2 s
/** An announce is one publish; a callback that hangs must not hold the shutdown longer than this. */
const HELLO_STOP_WAIT_MS = 2_000

/**
 * How the periodic hello scales with the network (specs/membership.md). Every node announcing
 * every interval makes each node hear N hellos per interval: O(N) per node, O(N²) in all. The
 * period is instead rate-scaled (as Consul scales its anti-entropy): `intervalMs × max(1, n / K)`
 * for a node that knows n peers, so the whole network publishes about K periodic hellos per
 * interval whatever its size, and each node hears O(1) of them. A join is still announced at
 * once (at start, and by the neighbours a new subscriber reaches), so it is learned in one gossip
 * round, not one period.
 */
export interface HelloPacing {
  /** Peers this node knows now (its peer book's size). Absent: 0, i.e. every `intervalMs`. */
  knownPeers?: () => number | Promise<number>
  /** K above (default HELLO_PEERS_PER_INTERVAL); `Infinity` is the old every-interval rule. */
  peersPerInterval?: number
  /**
   * Dead-node removal, run after each periodic hello: forget peers last heard before `cutoff`
   * (unix ms) = now − HELLO_EXPIRY_PERIODS periods, i.e. that missed that many of their hellos.
   */
  forgetSilent?: (cutoff: number) => Promise<void>
}

/** The period of a node that knows `known` peers (before jitter). */
export function helloPeriod (intervalMs: number, known: number, peersPerInterval = HELLO_PEERS_PER_INTERVAL): number {
  return Math.round(intervalMs * Math.max(1, known / peersPerInterval))
}

/**
 * Decides when to announce: at start, when the hello topic gains a subscribed peer (so a new
 * node is known everywhere within a gossip round, not on a slow timer), and periodically, every
 * `helloPeriod()` ± HELLO_JITTER (jittered so that nodes started together do not announce
 * together). At most one announce runs at a time; triggers that arrive meanwhile fold into one more.
 */
export class HelloAnnouncer {
  private callbacks?: HelloCallbacks
  private timer?: ReturnType<typeof setTimeout>
  private running = false
  private inFlight?: Promise<void>
  private again = false
  /** New hello subscribers whose outbound stream we wait for: peer → checks left. */
  private readonly waiting = new Map<string, number>()
  private waitTimer?: ReturnType<typeof setTimeout>
  /** The current period (before jitter), ms. */
  period: number

  constructor (
    private readonly pubsub: SubscriptionEvents,
    private readonly intervalMs: number,
    private readonly log: Logger,
    private readonly pacing: HelloPacing = {}
  ) {
    this.period = intervalMs
  }

  setCallbacks (cb: HelloCallbacks): void { this.callbacks = cb }
  get greet (): ((peerId: string) => Promise<void>) | undefined { return this.callbacks?.greet }

  private readonly onSubscriptionChange = (evt: SubscriptionChange): void => {
    if (!evt.detail.subscriptions.some(s => s.topic === HELLO_TOPIC && s.subscribe)) return
    const peer = evt.detail.peerId.toString()
    this.log.debug({ peer }, 'peer subscribed to hello: announcing')
    if (this.canSendTo(peer)) { this.trigger(); return }
    this.waiting.set(peer, HELLO_STREAM_WAIT_MAX)
    this.scheduleCheck()
  }

  private canSendTo (peer: string): boolean {
    return !hasOutboundStreams(this.pubsub) || this.pubsub.streamsOutbound.has(peer)
  }

  private scheduleCheck (): void {
    if (this.waitTimer !== undefined || !this.running) return
    this.waitTimer = setTimeout(() => {
      this.waitTimer = undefined
      let ready = false
      for (const [peer, left] of this.waiting) {
        if (this.canSendTo(peer) || left <= 1) { this.waiting.delete(peer); ready = true } else this.waiting.set(peer, left - 1)
      }
      if (ready) this.trigger()
      if (this.waiting.size > 0) this.scheduleCheck()
    }, HELLO_STREAM_CHECK_MS)
  }

  /**
   * `announce: false` starts silent, the first periodic hello at a random point of the first
   * period: for a simulator starting a network that has already converged (warm start).
   */
  start (opts: { announce?: boolean } = {}): void {
    if (this.running) return
    this.running = true
    if (this.callbacks === undefined) this.log.warn('no hello callbacks set: this node will not announce itself')
    this.pubsub.addEventListener('subscription-change', this.onSubscriptionChange)
    if (opts.announce === false) {
      void this.schedule(Math.random())
    } else {
      void this.schedule()
      this.trigger()
    }
  }

  /** Arms the next periodic hello, `fraction` (jittered by default) of a period from now. */
  private async schedule (fraction = 1 + HELLO_JITTER * (2 * Math.random() - 1)): Promise<void> {
    let known = 0
    try { known = await this.pacing.knownPeers?.() ?? 0 } catch (err) { this.log.warn({ err }, 'could not count the known peers') }
    if (!this.running) return
    this.period = helloPeriod(this.intervalMs, known, this.pacing.peersPerInterval)
    this.timer = setTimeout(() => { this.timer = undefined; this.periodic() }, Math.round(this.period * fraction))
    // The timer must never keep a stopping process alive.
    this.timer.unref()
  }

  private periodic (): void {
    if (!this.running) return
    this.trigger()
    const forget = this.pacing.forgetSilent
    if (forget !== undefined) {
      forget(Date.now() - HELLO_EXPIRY_PERIODS * this.period).catch((err: unknown) => { this.log.warn({ err }, 'could not forget silent peers') })
    }
    void this.schedule()
  }

  /** Resolves when no announce is in flight any more (waiting at most HELLO_STOP_WAIT_MS). */
  async stop (): Promise<void> {
    this.running = false
    this.pubsub.removeEventListener('subscription-change', this.onSubscriptionChange)
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    if (this.waitTimer !== undefined) clearTimeout(this.waitTimer)
    this.waitTimer = undefined
    this.waiting.clear()
    this.again = false
    if (this.inFlight === undefined) return
    let timer: ReturnType<typeof setTimeout> | undefined
    await Promise.race([this.inFlight, new Promise<void>((resolve) => { timer = setTimeout(resolve, HELLO_STOP_WAIT_MS) })])
    clearTimeout(timer)
  }

  trigger (): void {
    if (!this.running || this.callbacks === undefined) return
    if (this.inFlight !== undefined) { this.again = true; return }
    const announce = this.callbacks.announce
    this.inFlight = (async () => {
      // Bounded: at most one extra round per trigger burst, and none once stopped.
      do {
        this.again = false
        try { await announce() } catch (err) { this.log.warn({ err }, 'hello announce failed') }
      } while (this.again && this.running)
    })().finally(() => { this.inFlight = undefined })
  }
}
