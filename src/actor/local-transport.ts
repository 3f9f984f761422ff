import { FrameTooLarge, Unreachable } from '../lib/errors.js'
import type { FrameReceiver, Transport } from './types.js'

/**
 * In-process transport: several actor systems in one process, joined by a hub. Used by unit
 * tests and as the reference implementation of the Transport contract. Delivery is async
 * (next microtask) like a real network, in order per sender.
 */
export class LocalHub {
  private readonly members = new Map<string, LocalTransport>()

  transport (peerId: string, maxFrameBytes = 4 * 1024 * 1024): Transport {
    const t = new LocalTransport(this, peerId, maxFrameBytes)
    this.members.set(peerId, t)
    return t
  }

  /** Makes a peer unreachable, as if its process died. */
  remove (peerId: string): void { this.members.delete(peerId) }

  get (peerId: string): LocalTransport | undefined { return this.members.get(peerId) }
  all (): Iterable<LocalTransport> { return this.members.values() }
}

class LocalTransport implements Transport {
  private receiver?: FrameReceiver
  readonly topics = new Set<string>()

  constructor (private readonly hub: LocalHub, readonly peerId: string, readonly maxFrameBytes: number) {}

  setReceiver (receiver: FrameReceiver): void { this.receiver = receiver }

  deliver (frame: Uint8Array, from: string, via: 'direct' | 'gossip', topic?: string): void {
    const r = this.receiver
    if (r === undefined) return
    if (frame.length > this.maxFrameBytes) {
      r.onOversize(frame.subarray(0, 64 * 1024 + 5), frame.length, { peer: from, via })
      return
    }
    const origin = { peer: from, via, topic }
    // gossip passes the receiver's validator first, as a gossipsub topic validator would make it
    if (via === 'gossip' && r.validateGossip !== undefined && r.validateGossip(frame, origin) !== 'accept') return
    r.onFrame(frame, origin)
  }

  async send (peer: string, frame: Uint8Array): Promise<void> {
    if (frame.length > this.maxFrameBytes) throw new FrameTooLarge(`frame of ${frame.length} bytes exceeds the limit of ${this.maxFrameBytes}`, { limit: this.maxFrameBytes, size: frame.length })
    const dest = this.hub.get(peer)
    if (dest === undefined) throw new Unreachable(`peer ${peer} is not reachable`, { peer })
    await Promise.resolve()
    dest.deliver(frame, this.peerId, 'direct')
  }

  async publish (topic: string, frame: Uint8Array): Promise<void> {
    await Promise.resolve()
    for (const t of this.hub.all()) {
      if (t !== this && t.topics.has(topic)) t.deliver(frame, this.peerId, 'gossip', topic)
    }
  }

  subscribe (topic: string): void { this.topics.add(topic) }
  unsubscribe (topic: string): void { this.topics.delete(topic) }
}
