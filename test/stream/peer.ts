/**
 * A stream end in a process of its own, for the liveness tests (test/stream/stream.int.test.ts):
 * they kill it with SIGKILL, which no in-process stop can stand for (a stopping node says goodbye).
 *
 *   node --import tsx test/stream/peer.ts writer <dir>              serves /test/stream/ticks
 *   node --import tsx test/stream/peer.ts reader <dir> <bootstrap>   reads /test/stream/ticks of the bootstrap node (one tick a minute)
 *
 * Prints one JSON line {peerId, addr} once listening, and `reading` once the first chunk arrived.
 */
import '../../src/lib/polyfill.js'
import { z } from 'zod'
import { createNode } from '../../src/index.js'
import { newIdentity } from '../../src/identity/identity.js'
import { ticksBehavior, FAST_CHANNELS } from './ticks.js'

const [mode, dir, bootstrap] = process.argv.slice(2)
const node = await createNode({
  dataDir: dir,
  identity: await newIdentity(),
  channels: FAST_CHANNELS,
  config: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, helloIntervalMs: 60_000, bootstrap: bootstrap === undefined ? [] : [bootstrap] }
})
if (mode === 'writer') node.handle(ticksBehavior)
console.log(JSON.stringify({ peerId: node.peerId, addr: node.addrs()[0] }))
if (mode === 'reader') {
  const target = z.string().parse(bootstrap).split('/p2p/')[1]
  // one tick, then a minute of silence: only heartbeats can tell the writer that this process died
const r = await node.streams.open(target, '/test/stream/ticks', { everyMs: 60_000 })
  let first = true
  // bounded: the test kills this process long before
  for (let i = 0; i < 1_000_000; i++) {
    const n = await r.next()
    if (n.done === true) break
    if (first) { console.log('reading'); first = false }
  }
}
