import type { Libp2p, PeerId } from '@libp2p/interface'
import type { Ping } from '@libp2p/ping'
import { Unreachable } from '../lib/errors.js'
import type { Logger } from '../lib/log.js'
import { LIVENESS_INTERVAL_MS, LIVENESS_PING_TIMEOUT_MS } from './constants.js'

export interface LivenessInit {
  /** How often connected peers are looked at (default LIVENESS_INTERVAL_MS). */
  intervalMs?: number
  /** How long a ping may take before a silent peer is cut off (default LIVENESS_PING_TIMEOUT_MS). */
  pingTimeoutMs?: number
}

export interface LivenessComponents {
  node: Libp2p<{ ping: Ping }>
  /** When this node last received actor traffic from the peer (unix ms; 0: never). */
  lastHeard: (peer: string) => number
  log: Logger
}

/**
 * Closes the connections of peers that stopped answering, so that invocations waiting on them
 * fail at once (`onPeerDisconnect`) and bootstrap re-dials. It replaces libp2p's connection
 * monitor, which pings every connection every 10 s and aborts it when one ping takes longer than
 * 5 s (its adaptive minimum): on a saturated machine a ping — a new stream, protocol negotiation,
 * 32 bytes each way, queued behind the actor traffic and two busy event loops — took longer than
 * that on connections that were carrying thousands of replies a second, and the abort reset them
 * (the peer read ECONNRESET; issue 12, item 18).
 *
 * Here traffic is proof of life: a peer whose actor frames arrived within the last interval is
 * not pinged at all, and one whose ping fails is let off if its frames arrived meanwhile. Only a
 * peer silent for a whole ping timeout (20 s) is cut off. One check per peer at a time.
 */
export class Liveness {
  private timer?: ReturnType<typeof setInterval>
  private stopping = new AbortController()
  private readonly checking = new Map<string, Promise<void>>()
  private readonly intervalMs: number
  private readonly pingTimeoutMs: number

  constructor (init: LivenessInit, private readonly c: LivenessComponents) {
    this.intervalMs = init.intervalMs ?? LIVENESS_INTERVAL_MS
    this.pingTimeoutMs = init.pingTimeoutMs ?? LIVENESS_PING_TIMEOUT_MS
  }

  start (): void {
    if (this.timer !== undefined) return
    this.stopping = new AbortController()
    this.timer = setInterval(() => { void this.tick() }, this.intervalMs)
    // never keeps a stopping process alive
    this.timer.unref()
  }

  async stop (): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    this.stopping.abort()
    await Promise.allSettled([...this.checking.values()])
  }

  /**
   * One round (run by the interval; public for tests): checks every connected peer that sent
   * nothing lately and is not being checked already. Resolves when the checks it started end.
   */
  async tick (): Promise<void> {
    const now = Date.now()
    const started: Array<Promise<void>> = []
    const peers = new Map<string, PeerId>()
    for (const conn of this.c.node.getConnections()) if (conn.status === 'open') peers.set(conn.remotePeer.toString(), conn.remotePeer)
    for (const [key, id] of peers) {
      if (this.checking.has(key) || now - this.c.lastHeard(key) < this.intervalMs) continue
      const p = this.check(key, id)
        .catch((err: unknown) => { this.c.log.error({ err, peer: key }, 'liveness check failed') })
        .finally(() => this.checking.delete(key))
      this.checking.set(key, p)
      started.push(p)
    }
    await Promise.all(started)
  }

  private async check (key: string, id: PeerId): Promise<void> {
    const started = Date.now()
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.pingTimeoutMs)])
    try {
      await this.c.node.services.ping.ping(id, { signal })
      return
    } catch (err) {
      if (this.stopping.signal.aborted) return
      // The peer answered, only not to ping: it is there.
      if ((err as { name?: string }).name === 'UnsupportedProtocolError') return
      // Busy, not gone: its frames kept arriving while the ping waited.
      if (this.c.lastHeard(key) >= started) return
      const conns = this.c.node.getConnections(id)
      if (conns.length === 0) return
      this.c.log.info({ peer: key, err, silentMs: Date.now() - Math.max(started, this.c.lastHeard(key)) }, 'peer stopped answering: closing its connections')
      for (const conn of conns) conn.abort(new Unreachable(`peer ${key} did not answer a ping within ${this.pingTimeoutMs} ms`, { peer: key }))
    }
  }
}
