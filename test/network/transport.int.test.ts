import { afterEach, describe, expect, it } from 'vitest'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { OVERSIZE_HEAD_BYTES } from '../../src/network/constants.js'
import { cleanup, sameBytes, startNode, tagOf, testFrame, waitFor, within, type TestNode } from './helpers.js'

afterEach(cleanup)

/** Two started nodes, B knowing nothing, A dialling B through its address. */
async function pair (initA = {}, initB = {}): Promise<[TestNode, TestNode]> {
  const b = await startNode(initB)
  const a = await startNode(initA)
  await a.net.peers.connect(b.net.addrs()[0], AbortSignal.timeout(5_000))
  return [a, b]
}

function tcpPort (addr: string): number {
  return Number(multiaddr(addr).getComponents().find(c => c.name === 'tcp')?.value)
}

describe('libp2p actor transport', () => {
  it('carries frames both ways over one stream per peer, with the authenticated peer as origin', async () => {
    const [a, b] = await pair()
    await a.net.transport.send(b.net.peerId, testFrame(1))
    await b.inbox.until(() => b.inbox.frames().length === 1, 5_000, 'B to receive frame 1')
    await b.net.transport.send(a.net.peerId, testFrame(2))
    await a.inbox.until(() => a.inbox.frames().length === 1, 5_000, 'A to receive frame 2')

    expect(b.inbox.frames()[0].origin).toEqual({ peer: a.net.peerId, via: 'direct' })
    expect(a.inbox.frames()[0].origin).toEqual({ peer: b.net.peerId, via: 'direct' })
    expect(sameBytes(b.inbox.frames()[0].frame, testFrame(1))).toBe(true)
    expect(sameBytes(a.inbox.frames()[0].frame, testFrame(2))).toBe(true)
    // B answered on the stream A opened: one actor stream each side.
    expect(a.net.transport.actorStreams(b.net.peerId)).toBe(1)
    expect(b.net.transport.actorStreams(a.net.peerId)).toBe(1)
  })

  it('settles a simultaneous open on one stream per peer without losing a frame', async () => {
    const [a, b] = await pair()
    const N = 100
    // Both sides open at once: each sees the other's inbound stream while its own is opening.
    const sends = Array.from({ length: N }, (_, i) => [
      a.net.transport.send(b.net.peerId, testFrame(i)),
      b.net.transport.send(a.net.peerId, testFrame(1_000 + i))
    ]).flat()
    await within(Promise.all(sends), 10_000, 'simultaneous sends')
    await b.inbox.until(() => b.inbox.frames().length === N, 10_000, 'B to receive all')
    await a.inbox.until(() => a.inbox.frames().length === N, 10_000, 'A to receive all')
    expect(new Set(b.inbox.frames().map(r => tagOf(r.frame))).size).toBe(N)
    expect(new Set(a.inbox.frames().map(r => tagOf(r.frame))).size).toBe(N)
    // The retired stream closes within a few round trips; bounded ping-pong until it has.
    for (let round = 0; round < 50; round++) {
      if (a.net.transport.actorStreams(b.net.peerId) === 1 && b.net.transport.actorStreams(a.net.peerId) === 1) break
      const before = a.inbox.frames().length
      await b.net.transport.send(a.net.peerId, testFrame(5_000 + round))
      await a.inbox.until(() => a.inbox.frames().length > before, 5_000, 'ping-pong frame')
    }
    expect(a.net.transport.actorStreams(b.net.peerId)).toBe(1)
    expect(b.net.transport.actorStreams(a.net.peerId)).toBe(1)
  })

  it('delivers many frames in flight under backpressure, all intact', async () => {
    const [a, b] = await pair()
    const N = 1_000
    const SIZE = 32 * 1024 // 32 MiB in all: far beyond yamux's 256 KiB window, so send() fills up
    await within(Promise.all(Array.from({ length: N }, async (_, i) => { await a.net.transport.send(b.net.peerId, testFrame(i, SIZE)) })), 30_000, 'all sends')
    await b.inbox.until(() => b.inbox.frames().length === N, 30_000, `B to receive ${N} frames`)
    const tags = new Set(b.inbox.frames().map(r => tagOf(r.frame)))
    expect(tags.size).toBe(N)
    for (const r of b.inbox.frames()) expect(sameBytes(r.frame, testFrame(tagOf(r.frame), SIZE))).toBe(true)
    expect(a.net.transport.actorStreams(b.net.peerId)).toBe(1)
  })

  it('skips an oversized inbound frame, hands its head to onOversize, and keeps the stream for the frames around it', async () => {
    // B accepts at most 64 KiB; A may send up to 4 MiB.
    const [a, b] = await pair({}, { maxFrameBytes: 64 * 1024 })
    const big = testFrame(1_000, 200 * 1024)
    const sends = [
      a.net.transport.send(b.net.peerId, testFrame(1)),
      a.net.transport.send(b.net.peerId, big),
      a.net.transport.send(b.net.peerId, testFrame(2))
    ]
    // Another caller on the same connection carries on meanwhile.
    for (let i = 10; i < 60; i++) sends.push(a.net.transport.send(b.net.peerId, testFrame(i)))
    await within(Promise.all(sends), 10_000, 'sends')
    await b.inbox.until(() => b.inbox.items.length === 53, 10_000, 'B to receive 52 frames and 1 oversize')

    const kinds = b.inbox.items.map(r => r.kind === 'frame' ? tagOf(r.frame) : 'oversize')
    expect(kinds.indexOf(1)).toBeLessThan(kinds.indexOf('oversize'))
    expect(kinds.indexOf('oversize')).toBeLessThan(kinds.indexOf(2))
    const over = b.inbox.items.find(r => r.kind === 'oversize')
    if (over?.kind !== 'oversize') throw new Error('no oversize event')
    expect(over.totalLength).toBe(big.length)
    expect(over.origin).toEqual({ peer: a.net.peerId, via: 'direct' })
    expect(over.head.length).toBe(OVERSIZE_HEAD_BYTES)
    expect(sameBytes(over.head, big.subarray(0, OVERSIZE_HEAD_BYTES))).toBe(true)
    expect(b.inbox.frames().length).toBe(52)
    expect(a.net.transport.actorStreams(b.net.peerId)).toBe(1)
  })

  it('refuses to send a frame over its limit, with FrameTooLarge, before writing anything', async () => {
    const [a, b] = await pair({ maxFrameBytes: 64 * 1024 })
    await expect(a.net.transport.send(b.net.peerId, new Uint8Array(64 * 1024 + 1))).rejects.toMatchObject({ name: 'FrameTooLarge', code: 'FRAME_TOO_LARGE' })
    await expect(a.net.transport.publish('/t', new Uint8Array(64 * 1024 + 1))).rejects.toMatchObject({ name: 'FrameTooLarge' })
    await a.net.transport.send(b.net.peerId, testFrame(7))
    await b.inbox.until(() => b.inbox.items.length >= 1, 5_000, 'B to receive frame 7')
    // The refused frame left no trace: the first thing B got is the next frame.
    expect(b.inbox.items.map(r => r.kind)).toEqual(['frame'])
    expect(tagOf(b.inbox.frames()[0].frame)).toBe(7)
  })

  it('re-opens the stream after the remote restarts with the same key on a new host', async () => {
    const [a, b] = await pair()
    await a.net.transport.send(b.net.peerId, testFrame(1))
    await b.inbox.until(() => b.inbox.frames().length === 1, 5_000, 'first frame')
    const port = tcpPort(b.net.addrs()[0])

    let gone = false
    const off = a.net.transport.onPeerDisconnect((p) => { if (p === b.net.peerId) gone = true })
    const notify = new Set<() => void>()
    const off2 = a.net.transport.onPeerDisconnect(() => { for (const n of notify) n() })
    await b.stop()
    await waitFor(() => gone, 5_000, 'A to see B disconnect', (n) => { notify.add(n); return () => notify.delete(n) })
    off(); off2()

    const b2 = await startNode({ listen: [`/ip4/127.0.0.1/tcp/${port}`] }, { identity: b.identity, dir: b.dir })
    expect(b2.net.peerId).toBe(b.net.peerId)
    await a.net.transport.send(b.net.peerId, testFrame(2), Date.now() + 10_000)
    await b2.inbox.until(() => b2.inbox.frames().length === 1, 5_000, 'the restarted B to receive frame 2')
    expect(tagOf(b2.inbox.frames()[0].frame)).toBe(2)
    expect(b2.inbox.frames()[0].origin.peer).toBe(a.net.peerId)
    // And it answers on that new stream.
    await b2.net.transport.send(a.net.peerId, testFrame(3))
    await a.inbox.until(() => a.inbox.frames().length === 1, 5_000, 'A to receive frame 3')
    expect(a.net.transport.actorStreams(b.net.peerId)).toBe(1)
  })

  it('rejects with Unreachable within the deadline for a peer that is gone or was never seen', async () => {
    const [a, b] = await pair()
    await b.stop()
    const t0 = Date.now()
    await expect(a.net.transport.send(b.net.peerId, testFrame(1), Date.now() + 2_000)).rejects.toMatchObject({ name: 'Unreachable', code: 'UNREACHABLE' })

    const stranger = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
    const t1 = Date.now()
    await expect(a.net.transport.send(stranger, testFrame(2), Date.now() + 1_000)).rejects.toMatchObject({ name: 'Unreachable' })
    const strangerMs = Date.now() - t1
    // Bounded by the signal (generous slack: the machine is shared), never by a DHT walk.
    expect(t1 - t0).toBeLessThan(4_000)
    expect(strangerMs).toBeLessThan(3_000)
    await expect(a.net.transport.send('not-a-peer', testFrame(3))).rejects.toMatchObject({ name: 'BadRequest' })
    await expect(a.net.transport.send(a.net.peerId, testFrame(3))).rejects.toMatchObject({ name: 'BadRequest' })
  })

  it('fails to start on a port already taken, leaving nothing running', async () => {
    const b = await startNode()
    await expect(startNode({ listen: [`/ip4/127.0.0.1/tcp/${tcpPort(b.net.addrs()[0])}`] })).rejects.toThrow()
  })

  it('delivers gossip with the publisher as origin', async () => {
    const TOPIC = '/test/gossip'
    const b = await startNode({}, { beforeStart: (n) => { n.net.transport.subscribe(TOPIC) } })
    // A publishes as soon as B's subscriptions (hello and TOPIC arrive together) reach it.
    const a = await startNode({ bootstrap: [b.net.addrs()[0]] }, {
      beforeStart: (n) => {
        n.net.setHelloCallbacks({
          announce: async () => { await n.net.transport.publish(TOPIC, testFrame(42)) },
          greet: async () => {}
        })
      }
    })
    await b.inbox.until(() => b.inbox.frames().length >= 1, 10_000, 'B to receive the gossip frame')
    const got = b.inbox.frames()[0]
    expect(tagOf(got.frame)).toBe(42)
    expect(got.origin).toEqual({ peer: a.net.peerId, via: 'gossip', topic: TOPIC })
  })
})
