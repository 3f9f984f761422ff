import type { Logger } from 'pino'

/**
 * Opt-in timing of where an inbound frame waits inside a node (DMS_STAGE_TIMING=1; off by default,
 * when every hook is a no-op behind one boolean). For load investigations (scripts/load/run.ts
 * --timing): every REPORT_EVERY_MS it logs, at info as 'stage timing', per connected peer the
 * percentiles of
 *   - `wait`: frame read from its stream → handed to the actor layer (the fair-share backlog),
 *   - `handle`: the actor layer's synchronous work on it (checks, mailbox, a quick handler, the
 *     reply handed to the transport and, for the first of a turn, written),
 * and for the node the event-loop turn (start of one delivery round to the next, while rounds run
 * back to back) and a round's own length. What a turn holds beyond its round is the rest of the
 * process's work (socket reads, Noise, yamux, reply writes, timers, GC) and the CPU it was not given.
 */
const REPORT_EVERY_MS = 5_000
/** Samples kept per series and report period (beyond: counted, not kept). */
const MAX_SAMPLES = 200_000

class Series {
  samples: number[] = []
  count = 0
  add (v: number): void { this.count++; if (this.samples.length < MAX_SAMPLES) this.samples.push(v) }
  summary (): { n: number, p50: number, p99: number, max: number } {
    const s = this.samples.sort((a, b) => a - b)
    const at = (q: number): number => s.length === 0 ? 0 : Math.round(s[Math.min(s.length - 1, Math.floor(q * s.length))] * 1000) / 1000
    return { n: this.count, p50: at(0.5), p99: at(0.99), max: at(1) }
  }
}

export class StageTiming {
  readonly enabled: boolean
  private peers = new Map<string, { wait: Series, handle: Series }>()
  private turn = new Series()
  private round = new Series()
  private lastRound = 0
  private timer?: ReturnType<typeof setInterval>

  constructor (private readonly log: Logger, enabled = process.env.DMS_STAGE_TIMING === '1') {
    this.enabled = enabled
    if (enabled) {
      this.timer = setInterval(() => { this.report() }, REPORT_EVERY_MS)
      this.timer.unref()
    }
  }

  /** A frame of `peer` read at `readAt` (performance.now) was delivered from `start` to `end`. */
  frame (peer: string, readAt: number, start: number, end: number): void {
    let p = this.peers.get(peer)
    if (p === undefined) { p = { wait: new Series(), handle: new Series() }; this.peers.set(peer, p) }
    p.wait.add(start - readAt)
    p.handle.add(end - start)
  }

  /** A delivery round ran from `start` to `end`; `backToBack`: the previous round left frames waiting. */
  roundRan (start: number, end: number, backToBack: boolean): void {
    if (backToBack && this.lastRound > 0) this.turn.add(start - this.lastRound)
    this.lastRound = start
    this.round.add(end - start)
  }

  stop (): void { if (this.timer !== undefined) clearInterval(this.timer) }

  private report (): void {
    const peers: Record<string, unknown> = {}
    for (const [peer, p] of this.peers) peers[peer] = { waitMs: p.wait.summary(), handleMs: p.handle.summary() }
    this.log.info({ turnMs: this.turn.summary(), roundMs: this.round.summary(), peers }, 'stage timing')
    this.peers = new Map()
    this.turn = new Series()
    this.round = new Series()
  }
}
