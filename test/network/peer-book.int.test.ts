import { afterEach, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import type { FrameOrigin, FrameReceiver } from '../../src/actor/types.js'
import { newIdentity } from '../../src/identity/identity.js'
import { HELLO_TOPIC } from '../../src/network/index.js'
import { PeerBook } from '../../src/network/peer-book.js'
import { openDb } from '../../src/store/db.js'
import { cleanup, startNode, waitFor, type TestNode } from './helpers.js'
import { mkdtemp } from 'node:fs/promises'
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
    expect(typeof scores[m.net.peerId]?.score).toBe('number')
  })
})
