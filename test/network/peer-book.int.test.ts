import { afterEach, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import type { FrameOrigin, FrameReceiver } from '../../src/actor/types.js'
import { newIdentity } from '../../src/identity/identity.js'
import { HELLO_TOPIC } from '../../src/network/index.js'
import { PeerBook } from '../../src/network/peer-book.js'
import { openDb } from '../../src/store/db.js'
import { cleanup, startNode, waitFor, type TestNode } from './helpers.js'
import { mkdtemp } from 'node:fs/promises'
import { createServer, type AddressInfo } from 'node:net'
import { MAX_PENDING_GREETINGS } from '../../src/network/constants.js'
import { Peers } from '../../src/network/peers.js'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

afterEach(cleanup)

type Msg =
  | { t: 'hello', did: string, addrs: string[] }
  | { t: 'greet', did: string, id: string }
  | { t: 'ack', id: string }

const enc = new TextEncoder()
const dec = new TextDecoder()

/**
 * A stand-in for the actor layer, just enough to drive the hello wiring with real frames:
 * `announce` publishes a hello on `/nunet/hello`, `greet` sends a greeting and waits for its
 * answer, and inbound frames call `heardHello` / `greetedBy` as the behaviours will.
 */
class MiniActor implements FrameReceiver {
  /** Peers whose hello was recorded (heardHello resolved). */
  readonly heard = new Set<string>()
  /** Peers that answered our greeting. */
  readonly answered = new Set<string>()
  private readonly pending = new Map<string, () => void>()
  private readonly listeners = new Set<() => void>()
  node!: TestNode

  constructor (private readonly opts: { answerGreetings: boolean } = { answerGreetings: true }) {}

  attach (node: TestNode, hello: { announce: boolean, greet: boolean }): void {
    this.node = node
    node.net.transport.setReceiver(this)
    node.net.setHelloCallbacks({
      announce: async () => {
        if (hello.announce) await node.net.transport.publish(HELLO_TOPIC, this.encode({ t: 'hello', did: node.identity.did, addrs: node.net.addrs() }))
      },
      greet: async (peer) => {
        if (!hello.greet) return await new Promise<never>(() => {})
        const id = randomBytes(8).toString('hex')
        const answered = new Promise<void>((resolve) => { this.pending.set(id, resolve) })
        await node.net.transport.send(peer, this.encode({ t: 'greet', did: node.identity.did, id }))
        await answered
        this.answered.add(peer)
        this.changed()
      }
    })
  }

  private encode (m: Msg): Uint8Array { return enc.encode(JSON.stringify(m)) }
  private changed (): void { for (const l of [...this.listeners]) l() }

  async until (cond: () => boolean, ms: number, what: string): Promise<void> {
    await waitFor(cond, ms, what, (n) => { this.listeners.add(n); return () => this.listeners.delete(n) })
  }

  onFrame (frame: Uint8Array, origin: FrameOrigin): void {
    const m = JSON.parse(dec.decode(frame)) as Msg
    if (m.t === 'hello' && origin.via === 'gossip') {
      void this.node.net.peers.heardHello({ peerId: origin.peer, did: m.did, addrs: m.addrs })
        .then(() => { this.heard.add(origin.peer); this.changed() })
    } else if (m.t === 'greet' && this.opts.answerGreetings) {
      this.node.net.peers.greetedBy(origin.peer, m.did)
      void this.node.net.transport.send(origin.peer, this.encode({ t: 'ack', id: m.id })).catch(() => {})
    } else if (m.t === 'ack') {
      this.pending.get(m.id)?.()
      this.pending.delete(m.id)
    }
  }

  onOversize (): void {}
}

async function helloNode (actor: MiniActor, init: { bootstrap?: string[] } = {}, hello = { announce: true, greet: true }): Promise<TestNode> {
  return await startNode(init, { beforeStart: (n) => { actor.attach(n, hello) } })
}

describe('peer book', () => {
  it('persists what hello taught across a reopen of the database', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dms-book-'))
    const identity = await newIdentity()
    const other = await newIdentity()
    const a = await startNode({}, { identity, dir })
    // Port 1 on loopback refuses at once: the background dial fails, the record stays.
    await a.net.peers.heardHello({ peerId: other.peerId, did: other.did, addrs: ['/ip4/127.0.0.1/tcp/1'] })
    const before = (await a.net.peers.list()).find(p => p.id === other.peerId)
    expect(before).toMatchObject({ id: other.peerId, did: other.did, addrs: [`/ip4/127.0.0.1/tcp/1/p2p/${other.peerId}`], connected: false })
    expect(Date.parse(before?.lastHelloAt ?? '')).toBeGreaterThan(Date.now() - 60_000)
    await a.stop()

    const a2 = await startNode({}, { identity, dir })
    const after = (await a2.net.peers.list()).find(p => p.id === other.peerId)
    expect(after).toEqual(before)
    await a2.stop()

    // And the book alone reads it back from the level db.
    const db = await openDb(join(dir, 'db'))
    try {
      expect(await new PeerBook(db).get(other.peerId)).toMatchObject({ id: other.peerId, did: other.did })
    } finally {
      await db.close()
    }
  })

  it('refuses a hello whose DID is not the one of its peer, and records nothing', async () => {
    const a = await startNode()
    const b = await newIdentity()
    const c = await newIdentity()
    await expect(a.net.peers.heardHello({ peerId: b.peerId, did: c.did, addrs: [] })).rejects.toMatchObject({ name: 'BadRequest', code: 'BAD_REQUEST' })
    await expect(a.net.peers.heardHello({ peerId: 'not-a-peer', did: c.did, addrs: [] })).rejects.toMatchObject({ name: 'BadRequest' })
    expect((await a.net.peers.list()).map(p => p.id)).not.toContain(b.peerId)
    // A hello may only carry its own peer's addresses.
    await a.net.peers.heardHello({ peerId: b.peerId, did: b.did, addrs: [`/ip4/127.0.0.1/tcp/1/p2p/${c.peerId}`, 'garbage', '/ip4/127.0.0.1/tcp/2'] })
    expect((await a.net.peers.list()).find(p => p.id === b.peerId)?.addrs).toEqual([`/ip4/127.0.0.1/tcp/2/p2p/${b.peerId}`])
  })

  it('keeps from a hello at most 16 addresses, each a multiaddr of that peer alone, and replaces the dialler\'s list with each hello', async () => {
    const a = await startNode()
    const b = await newIdentity()
    const c = await newIdentity()
    const port = (i: number): string => `/ip4/127.0.0.1/tcp/${10_000 + i}`
    await a.net.peers.heardHello({
      peerId: b.peerId,
      did: b.did,
      addrs: [
        'garbage', '/ip4/999.1.1.1/tcp/1', `${port(0)}/p2p/${c.peerId}`, // not a multiaddr; not one; another peer's
        `/p2p/${b.peerId}${port(1)}`, // names the peer but does not end in it
        `${port(2)}/p2p/${c.peerId}/p2p-circuit/p2p/${b.peerId}`, // a relay's address: names another peer too
        'x'.repeat(300),
        ...Array.from({ length: 20 }, (_, i) => i % 2 === 0 ? port(100 + i) : `${port(100 + i)}/p2p/${b.peerId}`)
      ]
    })
    const first = (await a.net.peers.list()).find(p => p.id === b.peerId)?.addrs ?? []
    expect(first).toEqual(Array.from({ length: 16 }, (_, i) => `${port(100 + i)}/p2p/${b.peerId}`))

    // Two more hellos with new addresses each: the book keeps the newest 32, and the dialler
    // (libp2p's peer store) only the last hello's, so the list never holds more than 32.
    for (const round of [1, 2]) {
      await a.net.peers.heardHello({ peerId: b.peerId, did: b.did, addrs: Array.from({ length: 16 }, (_, i) => port(1_000 * round + i)) })
    }
    const after = (await a.net.peers.list()).find(p => p.id === b.peerId)?.addrs ?? []
    expect(after.length).toBe(32)
    expect(after.slice(0, 16)).toEqual(Array.from({ length: 16 }, (_, i) => `${port(2_000 + i)}/p2p/${b.peerId}`))
  })

  it('dials and greets at most MAX_PENDING_GREETINGS hello senders at once; the rest are recorded', async () => {
    // A listener that accepts and never speaks: each dial to it hangs until its timeout.
    const sink = createServer(() => {})
    await new Promise<void>(resolve => sink.listen(0, '127.0.0.1', resolve))
    const sinkPort = (sink.address() as AddressInfo).port
    const a = await startNode()
    try {
      const senders = await Promise.all(Array.from({ length: MAX_PENDING_GREETINGS + 36 }, async () => await newIdentity()))
      for (const s of senders) await a.net.peers.heardHello({ peerId: s.peerId, did: s.did, addrs: [`/ip4/127.0.0.1/tcp/${sinkPort}`] })
      const peers = a.net.peers
      if (!(peers instanceof Peers)) throw new Error('expected the network\'s Peers')
      expect(peers.pendingGreetings).toBe(MAX_PENDING_GREETINGS)
      const known = new Set((await a.net.peers.list()).map(p => p.id))
      expect(senders.every(s => known.has(s.peerId))).toBe(true)
    } finally {
      await a.stop()
      sink.close()
    }
  })

  it('bounds the book: beyond its size the least recently seen peer that is not connected goes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dms-book-'))
    const db = await openDb(join(dir, 'db'))
    try {
      const connected = new Set<string>()
      const evicted: string[] = []
      const book = new PeerBook(db, { maxEntries: 3 }, { connected: () => connected, onEvict: (id) => { evicted.push(id) } })
      for (const id of ['p1', 'p2', 'p3']) await book.merge(id, { addrs: [] })
      connected.add('p1')
      await book.merge('p4', { addrs: [] })
      // p1 is the oldest but connected: p2 goes
      expect(evicted).toEqual(['p2'])
      await book.merge('p3', { did: undefined }) // p3 seen again
      await book.merge('p5', { addrs: [] })
      expect(evicted).toEqual(['p2', 'p4'])
      expect((await book.all()).map(r => r.id).sort()).toEqual(['p1', 'p3', 'p5'])
      expect(await book.size()).toBe(3)
      // Every record carries when it was last seen, which orders eviction after a restart.
      expect((await book.all()).every(r => typeof r.seenAt === 'string')).toBe(true)
    } finally {
      await db.close()
    }
  })

  it('spreads hello across a chain A–B–C: each node learns the others\' DIDs, and A and C connect and greet', async () => {
    const [ma, mb, mc] = [new MiniActor(), new MiniActor(), new MiniActor()]
    const b = await helloNode(mb)
    const a = await helloNode(ma, { bootstrap: [b.net.addrs()[0]] })
    const c = await helloNode(mc, { bootstrap: [b.net.addrs()[0]] })
    const all = [a, b, c]

    await Promise.all([ma, mb, mc].map(async (m, i) => {
      const others = all.filter((_, j) => j !== i).map(n => n.net.peerId)
      await m.until(() => others.every(p => m.heard.has(p)), 10_000, `node ${'ABC'[i]} to hear the others`)
    }))
    for (const [i, n] of all.entries()) {
      const list = await n.net.peers.list()
      for (const o of all.filter((_, j) => j !== i)) {
        expect(list.find(p => p.id === o.net.peerId)?.did).toBe(o.identity.did)
      }
    }
    // A and C never bootstrapped to each other: they met through the hello and greeted.
    await ma.until(() => ma.answered.has(c.net.peerId), 10_000, 'A\'s greeting to be answered by C')
    await mc.until(() => mc.answered.has(a.net.peerId), 10_000, 'C\'s greeting to be answered by A')
    expect((await a.net.peers.list()).find(p => p.id === c.net.peerId)?.connected).toBe(true)
    expect((await a.net.peers.scores())[c.net.peerId]?.appScore).toBe(1)
  })

  it('scores the hello handshake: mutual above one-sided above none', async () => {
    const observer = new MiniActor()
    const mutual = new MiniActor()
    const oneSided = new MiniActor({ answerGreetings: false })
    const none = new MiniActor({ answerGreetings: false })
    const p = await helloNode(observer)
    const boot = { bootstrap: [p.net.addrs()[0]] }
    const m = await helloNode(mutual, boot)
    const o = await helloNode(oneSided, boot, { announce: true, greet: false })
    const n = await helloNode(none, boot, { announce: false, greet: false })

    await observer.until(() => observer.heard.has(m.net.peerId) && observer.heard.has(o.net.peerId), 10_000, 'the observer to hear M and O')
    await observer.until(() => observer.answered.has(m.net.peerId), 10_000, 'M to answer the greeting')
    const scores = await p.net.peers.scores()
    expect(scores[m.net.peerId]?.appScore).toBe(1)
    expect(scores[o.net.peerId]?.appScore).toBe(0.5)
    expect(scores[n.net.peerId]?.appScore ?? 0).toBe(0)
    // And gossipsub's total score, which peers are chosen by, follows the same order (it is
    // recomputed each 1 s heartbeat: bounded polling, as no event announces it).
    const total = async (): Promise<number[]> => {
      const s = await p.net.peers.scores()
      return [m, o, n].map(x => s[x.net.peerId]?.score ?? 0)
    }
    let last: number[] = []
    for (let i = 0; i < 50; i++) {
      last = await total()
      if (last[0] > last[1] && last[1] > last[2]) break
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    expect(last[0]).toBeGreaterThan(last[1])
    expect(last[1]).toBeGreaterThan(last[2])
  })
})
