import { afterEach, describe, expect, it } from 'vitest'
import { noise } from '@chainsafe/libp2p-noise'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { cleanup, startNode, tagOf, testFrame } from './helpers.js'

afterEach(cleanup)

const TOPIC = '/test/validated'
/** The test receiver's rule: a frame starting with 0xff is malformed. */
const BAD = 0xff

function badFrame (tag: number): Uint8Array {
  const f = testFrame(tag)
  f[0] = BAD
  return f
}

/**
 * A bare libp2p host with gossipsub (StrictSign, as dms) that dials one address and publishes on
 * TOPIC. Being no dms node, it runs no DHT: nobody learns of it but the peer it dials, so the only
 * way its messages reach a third node is through that peer.
 */
async function publisher (to: string): Promise<{ id: string, publish: (frame: Uint8Array) => Promise<void>, subscribers: () => string[], stop: () => Promise<void> }> {
  const host = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false }) }
  })
  await host.dial(multiaddr(to))
  return {
    id: host.peerId.toString(),
    publish: async (frame) => { await host.services.pubsub.publish(TOPIC, frame) },
    subscribers: () => host.services.pubsub.getSubscribers(TOPIC).map(String),
    stop: async () => { await host.stop() }
  }
}

/** Bounded polling, for gossipsub state that has no event (mesh, subscriptions, cached scores). */
async function poll (cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms
  for (let i = 0; i < Math.ceil(ms / 50) + 1; i++) {
    if (await cond()) return
    if (Date.now() > deadline) break
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`)
}

describe('gossip validation', () => {
  it('a message the receiver rejects is neither delivered nor forwarded, and lowers its publisher\'s score', async () => {
    // B validates (rejects frames starting with 0xff); C is connected only to B.
    const b = await startNode({}, { beforeStart: (n) => { n.net.transport.subscribe(TOPIC); n.inbox.judge = (frame) => frame[0] === BAD ? 'reject' : 'accept' } })
    const c = await startNode({ bootstrap: [b.net.addrs()[0]] }, { beforeStart: (n) => { n.net.transport.subscribe(TOPIC) } })
    const a = await publisher(b.net.addrs()[0])
    try {
      await poll(() => a.subscribers().includes(b.net.peerId), 10_000, 'A to see B subscribed')
      // Warm up until C hears A through B (B's mesh for the topic includes C): each try is a new message.
      let tag = 1
      await poll(async () => {
        if (c.inbox.frames().length > 0) return true
        await a.publish(testFrame(tag++))
        return false
      }, 15_000, 'a good frame to reach C through B')

      const before = c.inbox.frames().length
      for (let i = 0; i < 3; i++) await a.publish(badFrame(100 + i))
      await a.publish(testFrame(200))
      await c.inbox.until(() => c.inbox.frames().some(r => tagOf(r.frame) === 200), 10_000, 'the good frame after the bad ones to reach C')

      // Nobody past B saw the bad frames, nor did B's own receiver: B judged and rejected them.
      expect(c.inbox.frames().slice(before).map(r => r.frame[0] === BAD)).not.toContain(true)
      expect(b.inbox.frames().map(r => r.frame[0] === BAD)).not.toContain(true)
      expect(b.inbox.validated.filter(v => v.verdict === 'reject').length).toBe(3)
      expect(b.inbox.validated.every(v => v.origin.peer === a.id && v.origin.via === 'gossip' && v.origin.topic === TOPIC)).toBe(true)
      // Each reject counts against A at B (P4), enough to put it below zero despite its deliveries.
      const scores = await b.net.peers.scores()
      // (the counter decays ×0.99 a second: just under 3 if a decay ran meanwhile)
      expect(scores[a.id]?.invalidMessages).toBeGreaterThan(2.5)
      expect(scores[a.id]?.invalidMessages).toBeLessThanOrEqual(3)
      await poll(async () => ((await b.net.peers.scores())[a.id]?.score ?? 0) < 0, 5_000, 'A\'s score at B to fall below zero')
      // C never saw a bad message, so holds nothing against B.
      expect((await c.net.peers.scores())[b.net.peerId]?.invalidMessages ?? 0).toBe(0)
    } finally {
      await a.stop()
    }
  })

  it('an ignored message is dropped without penalty', async () => {
    const b = await startNode({}, { beforeStart: (n) => { n.net.transport.subscribe(TOPIC); n.inbox.judge = (frame) => frame[0] === BAD ? 'ignore' : 'accept' } })
    const a = await publisher(b.net.addrs()[0])
    try {
      await poll(() => a.subscribers().includes(b.net.peerId), 10_000, 'A to see B subscribed')
      await a.publish(badFrame(1))
      await a.publish(testFrame(2))
      await b.inbox.until(() => b.inbox.frames().length === 1, 10_000, 'B to receive the good frame')
      expect(tagOf(b.inbox.frames()[0].frame)).toBe(2)
      expect(b.inbox.validated.map(v => v.verdict)).toEqual(['ignore', 'accept'])
      expect((await b.net.peers.scores())[a.id]?.invalidMessages ?? 0).toBe(0)
    } finally {
      await a.stop()
    }
  })
})
