import '../../src/lib/polyfill.js'
import { noise } from '@chainsafe/libp2p-noise'
import type { Stream } from '@libp2p/interface'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p, type Libp2p } from 'libp2p'
import { FrameReader, encodeFrame } from '../../src/network/frame-codec.js'

/**
 * The floor the actor transport is measured against: a bare libp2p host (TCP + Noise + Yamux)
 * echoing frames on one long-lived stream, with the same varint framing as the actor stream.
 */
export const ECHO_PROTOCOL = '/dms-bench/echo/1.0.0'
const MAX = 4 * 1024 * 1024

async function host (listen: string[]): Promise<Libp2p> {
  return await createLibp2p({
    addresses: { listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()]
  })
}

function onFrames (stream: Stream, cb: (frame: Uint8Array) => void): void {
  const reader = new FrameReader(MAX, 64)
  stream.addEventListener('message', (evt) => {
    const data = evt.data
    for (const piece of (data instanceof Uint8Array ? [data] : data)) {
      for (const ev of reader.push(piece)) if (ev.type === 'frame') cb(ev.frame)
    }
  })
}

async function write (stream: Stream, frame: Uint8Array): Promise<void> {
  if (!stream.send(encodeFrame(frame))) await stream.onDrain()
}

export async function startEchoServer (): Promise<{ addr: string, stop: () => Promise<void> }> {
  const node = await host(['/ip4/127.0.0.1/tcp/0'])
  await node.handle(ECHO_PROTOCOL, (stream) => {
    onFrames(stream, (frame) => { void write(stream, frame) })
  }, { maxInboundStreams: 4 })
  return { addr: node.getMultiaddrs()[0].toString(), stop: async () => { await node.stop() } }
}

/** A client of the echo server: `call()` sends one frame and resolves when it comes back (FIFO). */
export async function echoClient (addr: string, frameBytes: number): Promise<{ call: () => Promise<void>, stop: () => Promise<void> }> {
  const node = await host(['/ip4/127.0.0.1/tcp/0'])
  const stream = await node.dialProtocol(multiaddr(addr), ECHO_PROTOCOL, { maxOutboundStreams: 4 })
  const waiting: Array<() => void> = []
  onFrames(stream, () => { waiting.shift()?.() })
  const payload = new Uint8Array(frameBytes).fill(0x61)
  return {
    call: async () => {
      const done = new Promise<void>(resolve => { waiting.push(resolve) })
      await write(stream, payload)
      await done
    },
    stop: async () => { await node.stop() }
  }
}
