import { afterEach, describe, expect, it } from 'vitest'
import { noise } from '@chainsafe/libp2p-noise'
import type { Libp2p } from '@libp2p/interface'
import { ping, type Ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { silentLogger } from '../../src/lib/log.js'
import { ACTOR_PROTOCOL } from '../../src/network/constants.js'
import { encodeFrame } from '../../src/network/frame-codec.js'
import { Liveness } from '../../src/network/liveness.js'
import { cleanup, startNode, testFrame, waitFor } from './helpers.js'

afterEach(cleanup)

const PING_PROTOCOL = '/ipfs/ping/1.0.0'
const hosts: Libp2p[] = []
afterEach(async () => { for (const h of hosts.splice(0)) await h.stop() })

/** A bare host that accepts ping streams and never answers them: alive, but its pings time out. */
async function deafHost (): Promise<Libp2p> {
  const host = await createLibp2p({ addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] }, transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [yamux()] })
  await host.handle(PING_PROTOCOL, () => {})
  hosts.push(host)
  return host
}

/** A host that checks liveness (it has the ping service Liveness uses). */
async function checker (): Promise<Libp2p<{ ping: Ping }>> {
  const host = await createLibp2p({ addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] }, transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [yamux()], connectionMonitor: { enabled: false }, services: { ping: ping() } })
  hosts.push(host)
  return host
}

describe('liveness', () => {
  it('keeps the connection of a peer that sends actor frames though it never answers a ping', async () => {
    // libp2p's connection monitor pinged every connection every 10 s and aborted it when a ping
    // took more than 5 s: busy connections were reset. Here the peer never answers pings at all,
    // and keeps sending frames for 20 s: past the first ping round and its timeout.
    const a = await startNode()
    const y = await deafHost()
    const stream = await y.dialProtocol(multiaddr(a.net.addrs()[0]), ACTOR_PROTOCOL)
    let disconnected = false
    const onGone = new Set<() => void>()
    a.net.transport.onPeerDisconnect((p) => { if (p === y.peerId.toString()) { disconnected = true; for (const n of onGone) n() } })
    const FRAMES = 100 // one every 200 ms: 20 s
    const sender = (async () => {
      for (let i = 0; i < FRAMES && stream.status === 'open'; i++) {
        stream.send(encodeFrame(testFrame(i)))
        await new Promise(resolve => setTimeout(resolve, 200))
      }
    })()
    await waitFor(() => a.inbox.frames().length >= FRAMES || disconnected, 40_000, 'A to receive every frame (or lose Y)', (n) => {
      onGone.add(n)
      const off = a.inbox.subscribe(n)
      return () => { onGone.delete(n); off() }
    })
    await sender
    expect(disconnected).toBe(false)
    expect(a.inbox.frames().length).toBe(FRAMES)
    expect(a.net.transport.actorStreams(y.peerId.toString())).toBe(1)
  }, 60_000)

  it('cuts off a peer that neither answers a ping nor sends anything, and spares one whose frames arrive meanwhile', async () => {
    const x = await checker()
    const y = await deafHost()
    await x.dial(y.getMultiaddrs()[0])
    let heard = 0
    const liveness = new Liveness({ intervalMs: 60_000, pingTimeoutMs: 500 }, { node: x, lastHeard: () => heard, log: silentLogger() })
    const yId = y.peerId.toString()

    // Frames arrived just now: no ping at all.
    heard = Date.now()
    await liveness.tick()
    expect(x.getConnections(y.peerId).length).toBe(1)

    // Silent before the round, but frames arrive while the ping waits: busy, not gone.
    heard = 0
    const round = liveness.tick()
    heard = Date.now()
    await round
    expect(x.getConnections(y.peerId).length).toBe(1)

    // Silent throughout: its connections are closed.
    heard = 0
    let gone = false
    const notify = new Set<() => void>()
    x.addEventListener('peer:disconnect', (evt) => { if (evt.detail.toString() === yId) { gone = true; for (const n of notify) n() } })
    await liveness.tick()
    await waitFor(() => gone, 5_000, 'X to disconnect Y', (n) => { notify.add(n); return () => notify.delete(n) })
    expect(x.getConnections(y.peerId).length).toBe(0)
    await liveness.stop()
  })
})
