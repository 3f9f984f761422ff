import type { Libp2p, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { InvalidConfig } from '../lib/errors.js'
import type { Logger } from '../lib/log.js'
import { BACKGROUND_DIAL_TIMEOUT_MS, BOOTSTRAP_BACKOFF_MAX_MS, BOOTSTRAP_BACKOFF_MIN_MS } from './constants.js'
import { peerIdOf } from './peers.js'

/**
 * Keeps this node connected to its bootstrap peers: dials each at start, and re-dials one
 * whenever it disconnects or a dial fails, with exponential backoff (1 s doubling to 30 s, with
 * jitter so restarted nodes do not dial in lock-step) that resets once connected. Unlike libp2p's
 * KEEP_ALIVE reconnect queue it never gives up: a bootstrap peer is configuration, not a guess.
 * `start()` does not wait for the dials, so a node with an absent bootstrap peer starts at once.
 */
interface Target { ma: Multiaddr, id: PeerId, attempt: number, timer?: ReturnType<typeof setTimeout>, dialling: boolean }

export class BootstrapKeeper {
  private readonly targets = new Map<string, Target>()
  private running = false
  private stopping = new AbortController()
  private readonly inFlight = new Set<Promise<void>>()

  constructor (addrs: string[], private readonly node: Libp2p, private readonly log: Logger) {
    for (const a of addrs) {
      let ma: Multiaddr
      try { ma = multiaddr(a) } catch { throw new InvalidConfig(`bootstrap address is not a multiaddr: '${a}'`) }
      const id = peerIdOf(ma)
      if (id === undefined) throw new InvalidConfig(`bootstrap address must end in /p2p/<peer id>: '${a}'`)
      if (id === node.peerId.toString()) continue
      this.targets.set(id, { ma, id: peerIdFromString(id), attempt: 0, dialling: false })
    }
  }

  private readonly onDisconnect = (evt: CustomEvent<PeerId>): void => {
    const t = this.targets.get(evt.detail.toString())
    if (t !== undefined) this.schedule(t)
  }

  private readonly onConnect = (evt: CustomEvent<PeerId>): void => {
    const t = this.targets.get(evt.detail.toString())
    if (t !== undefined) {
      t.attempt = 0
      if (t.timer !== undefined) clearTimeout(t.timer)
      t.timer = undefined
    }
  }

  start (): void {
    if (this.running || this.targets.size === 0) return
    this.running = true
    this.stopping = new AbortController()
    this.node.addEventListener('peer:disconnect', this.onDisconnect)
    this.node.addEventListener('peer:connect', this.onConnect)
    for (const t of this.targets.values()) this.dial(t)
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    this.stopping.abort()
    this.node.removeEventListener('peer:disconnect', this.onDisconnect)
    this.node.removeEventListener('peer:connect', this.onConnect)
    for (const t of this.targets.values()) {
      if (t.timer !== undefined) clearTimeout(t.timer)
      t.timer = undefined
    }
    await Promise.allSettled([...this.inFlight])
  }

  private schedule (t: Target): void {
    if (!this.running || t.timer !== undefined || t.dialling) return
    const base = Math.min(BOOTSTRAP_BACKOFF_MAX_MS, BOOTSTRAP_BACKOFF_MIN_MS * 2 ** t.attempt)
    const delay = base / 2 + Math.random() * base / 2
    t.attempt = Math.min(t.attempt + 1, 16)
    t.timer = setTimeout(() => { t.timer = undefined; this.dial(t) }, delay)
  }

  private dial (t: Target): void {
    if (!this.running || t.dialling) return
    if (this.node.getConnections(t.id).length > 0) return
    t.dialling = true
    const p = this.node.dial(t.ma, { signal: AbortSignal.any([this.stopping.signal, AbortSignal.timeout(BACKGROUND_DIAL_TIMEOUT_MS)]) })
      .then(() => { this.log.debug({ peer: t.id.toString() }, 'connected to bootstrap peer') })
      .catch((err: unknown) => {
        if (!this.running) return
        this.log.debug({ peer: t.id.toString(), err }, 'bootstrap dial failed; will retry')
      })
      .finally(() => {
        t.dialling = false
        this.inFlight.delete(p)
        if (this.running && this.node.getConnections(t.id).length === 0) this.schedule(t)
      })
    this.inFlight.add(p)
  }
}
