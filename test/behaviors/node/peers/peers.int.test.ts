import { afterEach, describe, expect, it } from 'vitest'
import { createServer, type AddressInfo } from 'node:net'
import type { CallInfo } from '../../../../src/actor/behavior.js'
import type { Handle } from '../../../../src/actor/types.js'
import type { Did } from '../../../../src/identity/did.js'
import { newIdentity } from '../../../../src/identity/identity.js'
import type { NodeInfo } from '../../../../src/node/info.js'
import type { PeerService } from '../../../../src/network/peer-service.js'
import { peerBehaviors } from '../../../../behaviors/node/peers/index.js'
import broadcastHello from '../../../../behaviors/broadcast/hello.js'
import publicHello from '../../../../behaviors/public/hello.js'
import connect from '../../../../behaviors/node/peers/connect.js'
import dht from '../../../../behaviors/node/peers/dht.js'
import list from '../../../../behaviors/node/peers/list.js'
import ping from '../../../../behaviors/node/peers/ping.js'
import score from '../../../../behaviors/node/peers/score.js'
import self from '../../../../behaviors/node/peers/self.js'
import { cleanup, startNode, type TestNode } from '../../../network/helpers.js'

afterEach(cleanup)

function nodeInfo (n: TestNode): NodeInfo {
  return { did: n.identity.did, peerId: n.net.peerId, version: 'test', startedAt: Date.now(), addrs: () => n.net.addrs() }
}

/** The call facts a handler sees, as the dispatcher would give them for a call from `from`. */
function callFrom (from: TestNode, opts: { signal?: AbortSignal, id?: Did } = {}): CallInfo {
  const handle: Handle = { id: opts.id ?? from.identity.did, did: from.identity.did, addr: { peer: from.net.peerId, inbox: 'root' } }
  return {
    from: handle,
    invoker: handle.id,
    envelope: { v: 1, to: handle, from: handle, be: '/test', nonce: 'n0000000', exp: Date.now() + 10_000, msg: {} },
    signal: opts.signal ?? AbortSignal.timeout(5_000)
  }
}

function services (n: TestNode): { node: NodeInfo, peers: PeerService } {
  return { node: nodeInfo(n), peers: n.net.peers }
}

async function twoNodes (): Promise<[TestNode, TestNode]> {
  const b = await startNode()
  const a = await startNode()
  return [a, b]
}

describe('peer behaviours', () => {
  it('are listed once each, under their own paths', () => {
    expect(peerBehaviors.map(b => b.path)).toEqual([
      '/dms/node/peers/list', '/dms/node/peers/self', '/dms/node/peers/ping', '/dms/node/peers/connect',
      '/dms/node/peers/dht', '/dms/node/peers/score', '/public/hello', '/broadcast/hello'
    ])
    expect(broadcastHello.topic).toBe('/nunet/hello')
    expect(broadcastHello.capability).toBe(false)
  })

  it('connect, list, self, ping, dht and score answer within their schemas', async () => {
    const [a, b] = await twoNodes()
    const s = services(a)
    const c = await connect.handler(s, connect.request.parse({ address: b.net.addrs()[0] }), callFrom(a))
    expect(connect.response.parse(c)).toEqual({ id: b.net.peerId, connected: true })

    const l = list.response.parse(await list.handler(s, {}, callFrom(a)))
    expect(l.peers.find(p => p.id === b.net.peerId)).toMatchObject({ connected: true, addrs: expect.arrayContaining([b.net.addrs()[0]]) })

    expect(self.response.parse(self.handler(s, {}, callFrom(a)))).toEqual({ id: a.net.peerId, did: a.identity.did, addrs: a.net.addrs() })

    const p = ping.response.parse(await ping.handler(s, { peer: b.net.peerId }, callFrom(a)))
    expect(Number.isFinite(p.rttMs)).toBe(true)
    // the figure comes from an exchange with the peer: a peer no one knows gets no figure, but a typed refusal
    const stranger = (await newIdentity()).peerId
    await expect(ping.handler(s, { peer: stranger }, callFrom(a, { signal: AbortSignal.timeout(10_000) }))).rejects.toMatchObject({ name: expect.stringMatching(/^(Unreachable|Timeout)$/) })

    const d = dht.response.parse(await dht.handler(s, {}, callFrom(a)))
    expect(d.mode).toBe('server')

    const sc = score.response.parse(await score.handler(s, {}, callFrom(a)))
    expect(sc.scores[b.net.peerId]).toEqual({ score: expect.any(Number), appScore: 0, behaviourPenalty: expect.any(Number), invalidMessages: 0, topics: expect.any(Number) })
    expect(Object.keys(sc.scores)).not.toContain(a.net.peerId)
  })

  it('refuse bad input with typed errors', async () => {
    const [a, b] = await twoNodes()
    const s = services(a)
    await expect(ping.handler(s, { peer: a.net.peerId }, callFrom(a))).rejects.toMatchObject({ name: 'BadRequest' })
    await expect(ping.handler(s, { peer: 'nope' }, callFrom(a))).rejects.toMatchObject({ name: 'BadRequest' })
    const aborted = AbortSignal.abort()
    await expect(ping.handler(s, { peer: b.net.peerId }, callFrom(a, { signal: aborted }))).rejects.toMatchObject({ name: 'Timeout' })
    await expect(connect.handler(s, { address: '/ip4/127.0.0.1/tcp/1' }, callFrom(a))).rejects.toMatchObject({ name: 'BadRequest' })
    await expect(connect.handler(s, { address: 'not a multiaddr' }, callFrom(a))).rejects.toMatchObject({ name: 'BadRequest' })
    await b.stop()
    await expect(connect.handler(s, { address: `/ip4/127.0.0.1/tcp/1/p2p/${b.net.peerId}` }, callFrom(a))).rejects.toMatchObject({ name: 'Unreachable' })
  })

  it('connect records an address only once a dial through it worked, even when already connected', async () => {
    const [a, b] = await twoNodes()
    const s = services(a)
    const good = b.net.addrs()[0]
    await connect.handler(s, { address: good }, callFrom(a))
    // A port nothing listens on (bound, then released).
    const closed = createServer()
    await new Promise<void>(resolve => closed.listen(0, '127.0.0.1', resolve))
    const port = (closed.address() as AddressInfo).port
    await new Promise<void>(resolve => closed.close(() => { resolve() }))
    const bad = `/ip4/127.0.0.1/tcp/${port}/p2p/${b.net.peerId}`

    // Already connected, but not through that address: it is dialled, fails, and is not recorded.
    await expect(connect.handler(s, { address: bad }, callFrom(a))).rejects.toMatchObject({ name: 'Unreachable' })
    const rec = (await a.net.peers.list()).find(p => p.id === b.net.peerId)
    expect(rec?.connected).toBe(true)
    expect(rec?.addrs).not.toContain(bad)
    expect(rec?.addrs[0]).toBe(good)
    // The address of the connection in use is verified by it: connecting again answers at once.
    expect(await connect.handler(s, { address: good }, callFrom(a))).toEqual({ id: b.net.peerId, connected: true })
  })

  it('/broadcast/hello records the publisher\'s DID; /public/hello answers and completes the handshake', async () => {
    const [a, b] = await twoNodes()
    const sa = services(a)
    const res = await broadcastHello.handler(sa, broadcastHello.request.parse({ did: b.identity.did, addrs: b.net.addrs() }), callFrom(b))
    expect(broadcastHello.response.parse(res)).toEqual({})
    expect((await a.net.peers.list()).find(p => p.id === b.net.peerId)?.did).toBe(b.identity.did)
    expect((await a.net.peers.scores())[b.net.peerId]?.appScore).toBe(0.5)

    const hello = publicHello.response.parse(publicHello.handler(sa, {}, callFrom(b)))
    expect(hello).toEqual({ did: a.identity.did, peerId: a.net.peerId })
    expect((await a.net.peers.scores())[b.net.peerId]?.appScore).toBe(1)

    // A hello signed by one key that names another DID is refused.
    const c = await startNode()
    await expect(broadcastHello.handler(sa, { did: c.identity.did, addrs: [] }, callFrom(b))).rejects.toMatchObject({ name: 'BadRequest' })
    await expect(broadcastHello.handler(sa, { did: c.identity.did, addrs: [] }, callFrom(b, { id: c.identity.did }))).rejects.toMatchObject({ name: 'BadRequest' })
    expect((await a.net.peers.list()).map(p => p.id)).not.toContain(c.net.peerId)
  })
})
