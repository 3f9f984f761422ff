import type { Logger } from 'pino'

/** What the channel layer knows of a peer: reachable, being (re)connected, or gone. */
export type LinkState = 'connected' | 'connecting' | 'disconnected'

export interface LinkInit {
  peer: string
  intervalMs: number
  misses: number
  /** One heartbeat to the peer; rejects when it does not answer within `timeoutMs`. */
  ping: (peer: string, timeoutMs: number) => Promise<void>
  /** The state changed (senders hello again on `connected`). */
  onState: (peer: string, state: LinkState) => void
  log: Logger
}

/**
 * Liveness of one peer, shared by every channel and stream between the pair (one heartbeat covers
 * them all). Heartbeats run only while the link is held: by a sender's open channel (which keeps
 * probing while the peer is away, to learn when it is back), by a receiver's channel from that
 * peer (released once the peer is `disconnected`: the sender owns the channel and hellos again),
 * or by an open stream, either end (src/stream/: released when the stream ends or is lost).
 */
export class Link {
  state: LinkState = 'connecting'
  private failures = 0
  private senders = 0
  private streams = 0
  private receiving = false
  /** Heartbeats sent to this peer since the link was made (tests check that none run while nothing is open). */
  pings = 0
  private timer: NodeJS.Timeout | undefined
  private inFlight = false
  private closed = false

  constructor (private readonly init: LinkInit) {}

  get held (): boolean { return this.senders > 0 || this.streams > 0 || this.receiving }

  holdSender (): void { this.senders++; this.arm() }
  releaseSender (): void { this.senders = Math.max(0, this.senders - 1); if (!this.held) this.disarm() }
  /**
   * A stream to or from this peer opened: we just heard from the peer (its open or its reply), so
   * it counts as an answer — a state left `disconnected` by an earlier loss must not end the new
   * stream before a single heartbeat was tried.
   */
  holdStream (): void {
    this.streams++
    this.alive()
    this.arm()
  }

  releaseStream (): void { this.streams = Math.max(0, this.streams - 1); if (!this.held) this.disarm() }

  /** A hello or deliver came from this peer: heartbeat it back while it is reachable. */
  holdReceiver (): void {
    this.receiving = true
    this.alive()
    this.arm()
  }

  /** Anything answered by or received from the peer proves it is there. */
  alive (): void {
    this.failures = 0
    this.set('connected')
  }

  /** A heartbeat (or a call of the channel) got no answer. */
  missed (): void {
    this.failures++
    if (this.failures >= this.init.misses) {
      this.set('disconnected')
      // the sender of the channel reconnects; a receiver alone stops heartbeating a peer that is gone
      // (streams are told by onState and release their holds as they end)
      if (this.senders === 0) { this.receiving = false; if (!this.held) this.disarm() }
    }
  }

  close (): void { this.closed = true; this.disarm() }

  private set (s: LinkState): void {
    if (this.state === s) return
    this.state = s
    this.init.log.debug({ peer: this.init.peer, state: s }, 'channel link state')
    this.init.onState(this.init.peer, s)
  }

  private arm (): void {
    if (this.timer !== undefined || this.closed || !this.held) return
    // the first beat at once: an opened channel learns the peer's state without waiting an interval
    this.timer = setTimeout(() => { this.beat() }, this.state === 'connected' ? this.init.intervalMs : 0)
    this.timer.unref()
  }

  private disarm (): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
  }

  private beat (): void {
    this.timer = undefined
    if (this.closed || !this.held) return
    if (!this.inFlight) {
      this.inFlight = true
      this.pings++
      this.init.ping(this.init.peer, this.init.intervalMs).then(() => { this.alive() }, () => { this.missed() }).finally(() => {
        this.inFlight = false
      })
    }
    this.timer = setTimeout(() => { this.beat() }, this.init.intervalMs)
    this.timer.unref()
  }
}
