import { afterEach, describe, expect, it } from 'vitest'
import { multiaddr } from '@multiformats/multiaddr'
import { HELLO_TOPIC } from '../../src/network/index.js'
import { cleanup, startNode, tagOf, testFrame, type TestNode } from './helpers.js'

afterEach(cleanup)

/** A node whose hello is a recognisable frame on `/nunet/hello` (no actor layer needed). */
async function announcing (tag: number, init = {}): Promise<TestNode> {
  return await startNode(init, {
    beforeStart: (n) => {
      n.net.setHelloCallbacks({ announce: async () => { await n.net.transport.publish(HELLO_TOPIC, testFrame(tag)) }, greet: async () => {} })
    }
  })
}

describe('bootstrap and discovery', () => {
  it('re-dials a bootstrap peer that went away and came back, and re-announces to it', async () => {
    const b = await startNode()
    const bAddr = b.net.addrs()[0]
    const port = Number(multiaddr(bAddr).getComponents().find(c => c.name === 'tcp')?.value)
    const a = await announcing(7, { bootstrap: [bAddr] })
    await b.inbox.until(() => b.inbox.frames().some(f => f.origin.peer === a.net.peerId), 10_000, 'B to hear A\'s hello')

    await b.stop()
    const b2 = await startNode({ listen: [`/ip4/127.0.0.1/tcp/${port}`] }, { identity: b.identity, dir: b.dir })
    // Nobody dials A from B's side: only A's bootstrap keeper can restore the link, and A's hello
    // follows as soon as B's subscription arrives.
    await b2.inbox.until(() => b2.inbox.frames().some(f => f.origin.peer === a.net.peerId), 15_000, 'the restarted B to hear A again')
    const f = b2.inbox.frames().find(f => f.origin.peer === a.net.peerId)
    expect(f?.origin).toEqual({ peer: a.net.peerId, via: 'gossip', topic: HELLO_TOPIC })
    expect(tagOf(f?.frame ?? new Uint8Array(4))).toBe(7)
  })

  it('reaches a peer known only through the DHT', async () => {
    const b = await startNode()
    const a = await startNode({ bootstrap: [b.net.addrs()[0]] })
    const c = await startNode({ bootstrap: [b.net.addrs()[0]] })
    // A has never heard of C: the transport asks the DHT (B knows C) for its addresses. The
    // routing tables fill a moment after the connections: bounded attempts, each a full send.
    let delivered = false
    for (let attempt = 0; attempt < 5 && !delivered; attempt++) {
      delivered = await a.net.transport.send(c.net.peerId, testFrame(attempt), Date.now() + 2_000).then(() => true, () => false)
    }
    expect(delivered).toBe(true)
    await c.inbox.until(() => c.inbox.frames().length >= 1, 5_000, 'C to receive A\'s frame')
    expect(c.inbox.frames()[0].origin.peer).toBe(a.net.peerId)
    expect(await a.net.findAddrs(c.net.peerId, AbortSignal.timeout(2_000))).toEqual(expect.arrayContaining([expect.stringMatching(new RegExp(`/p2p/${c.net.peerId}$`))]))
  })
})
