import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { z } from 'zod'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createNode, type Node } from '../../src/index.js'
import { newIdentity, type Identity } from '../../src/identity/identity.js'
import { addRoot } from '../../src/security/index.js'
import type { ChannelServiceInit, ReceiveContext } from '../../src/channel/index.js'
import type { DmsError } from '../../src/lib/errors.js'
import { CLEAN, checkHistory } from './history.js'

/**
 * The reliable channel between two real nodes on loopback, each with its own level db in a
 * temporary directory (issue 8). The receiver B trusts the sender A's key as a root; C trusts
 * nobody. Restarts reopen the same data dir with the same key and port.
 */
const T = { timeout: 20_000 }
const FAST: ChannelServiceInit = { heartbeatMs: 200, heartbeatMisses: 3, rtoMs: 100, rtoMaxMs: 1_000, ackWaitMs: 200, callTimeoutMs: 3_000 }

interface Party { id: Identity, dir: string, port: number, node: Node }

describe('reliable channel', () => {
  let root: string
  let a: Party
  let b: Party
  let c: Party
  const cleanups: Array<() => Promise<void> | void> = []

  const start = async (p: Omit<Party, 'node'> & { node?: Node }, bootstrap: string[] = [], channels: ChannelServiceInit = FAST): Promise<Node> => {
    const node = await createNode({ dataDir: p.dir, identity: p.id, channels, config: { listen: [`/ip4/127.0.0.1/tcp/${p.port}`], mdns: false, helloIntervalMs: 60_000, bootstrap } })
    if (p.port === 0) p.port = Number(node.addrs()[0].split('/')[4])
    return node
  }
  const addr = (p: Party): string => `/ip4/127.0.0.1/tcp/${p.port}/p2p/${p.node.peerId}`
  /** Records each handled message in the receiver's store, in the batch that commits the checkpoint. */
  const recorder = (calls: number[], gate?: (seq: number) => Promise<void>) => async (msg: unknown, ctx: ReceiveContext): Promise<void> => {
    calls.push(ctx.seq)
    if (gate !== undefined) await gate(ctx.seq)
    ctx.batch.put(ctx.store, `h!${String(ctx.seq).padStart(8, '0')}!${calls.length}`, { seq: ctx.seq, msg })
  }
  const committed = async (n: Node, name: string): Promise<Array<{ seq: number, msg: unknown }>> => {
    const out: Array<{ seq: number, msg: unknown }> = []
    for await (const [, v] of n.channels.store(name).iterator()) out.push(v as { seq: number, msg: unknown })
    return out
  }
  const sendAll = async (ch: { send: (m: unknown) => Promise<{ seq: number }> }, from: number, to: number): Promise<Array<{ seq: number, msg: unknown }>> =>
    await Promise.all(Array.from({ length: to - from + 1 }, async (_, i) => { const msg = { n: from + i }; return { seq: (await ch.send(msg)).seq, msg } }))
  const gate = (): { open: () => void, wait: Promise<void>, entered: Promise<number>, enter: (seq: number) => void } => {
    let open!: () => void
    let enter!: (seq: number) => void
    const wait = new Promise<void>(resolve => { open = resolve })
    const entered = new Promise<number>(resolve => { enter = resolve })
    return { open, wait, entered, enter }
  }

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'dms-channel-'))
    const [ia, ib, ic] = await Promise.all([newIdentity(), newIdentity(), newIdentity()])
    await addRoot(join(root, 'b'), 'dms', ia.did)
    b = { id: ib, dir: join(root, 'b'), port: 0 } as Party
    b.node = await start(b)
    c = { id: ic, dir: join(root, 'c'), port: 0 } as Party
    c.node = await start(c)
    a = { id: ia, dir: join(root, 'a'), port: 0 } as Party
    a.node = await start(a, [addr(b), addr(c)])
  })
  afterEach(async () => { for (const f of cleanups.splice(0).reverse()) await f() })
  afterAll(async () => {
    for (const p of [a, b, c]) await p.node.stop()
    await rm(root, { recursive: true, force: true })
  })

  it('delivers N messages once each, in order, and acknowledges them all', async () => {
    const calls: number[] = []
    b.node.channels.receive('ordered', recorder(calls))
    const ch = a.node.channels.open(b.node.did, 'ordered')
    const sent = await sendAll(ch, 1, 500)
    expect(sent.map(s => s.seq)).toEqual(Array.from({ length: 500 }, (_, i) => i + 1))
    await ch.whenAcked(500)
    expect(checkHistory({ sent, handled: await committed(b.node, 'ordered'), acked: 500 })).toEqual(CLEAN)
    expect(calls).toEqual(sent.map(s => s.seq))
    const rows = (await a.node.invoke<{ channels: Array<Record<string, unknown>> }>(a.node.did, '/dms/node/channels/list', {}, T)).channels
    expect(rows.find(r => r.name === 'ordered')).toMatchObject({ role: 'sender', peer: b.node.peerId, state: 'connected', status: 'open', nextSeq: 501, acked: 500, outbox: 0 })
    const rrows = (await b.node.invoke<{ channels: Array<Record<string, unknown>> }>(b.node.did, '/dms/node/channels/list', {}, T)).channels
    expect(rrows.find(r => r.name === 'ordered')).toMatchObject({ role: 'receiver', peer: a.node.peerId, checkpoint: 500 })
    // the open channels as an operator's scrape sees them, on each side
    expect((await a.node.observe.metrics.scrape()).body).toMatch(/^dms_channels_open\{role="sender",state="connected"\} [1-9]\d*$/m)
    expect((await b.node.observe.metrics.scrape()).body).toMatch(/^dms_channels_open\{role="receiver",state="connected"\} [1-9]\d*$/m)
  })

  it('drops the duplicates a retransmission brings, handling each message once', async () => {
    const calls: number[] = []
    // the first message takes longer than the sender's retransmission timeout and the receiver's ack wait: the sender sends again
    const slow = async (seq: number): Promise<void> => { if (seq === 1) await new Promise(resolve => setTimeout(resolve, 600)) }
    b.node.channels.receive('dups', recorder(calls, slow))
    const ch = a.node.channels.open(b.node.did, 'dups')
    const sent = await sendAll(ch, 1, 50)
    await ch.whenAcked(50)
    const row = b.node.channels.list().find(r => r.name === 'dups')
    expect(row?.duplicates).toBeGreaterThan(0)
    expect(calls).toEqual(sent.map(s => s.seq))
    expect(checkHistory({ sent, handled: await committed(b.node, 'dups'), acked: 50 })).toEqual(CLEAN)
  })

  it('a sender stopped mid-stream resends, after its restart, what was not acknowledged', async () => {
    const calls: number[] = []
    const g = gate()
    // the receiver stalls at 40, so most of what A sends is still unacknowledged when A stops
    b.node.channels.receive('sender-restart', recorder(calls, async (seq) => { if (seq === 40) { g.enter(seq); await g.wait } }))
    const ch = a.node.channels.open(b.node.did, 'sender-restart')
    const sent = await sendAll(ch, 1, 300)
    await g.entered
    const before = a.node.channels.list().find(r => r.name === 'sender-restart')
    expect(before?.acked).toBeLessThan(300)
    await a.node.stop()
    g.open()
    a.node = await start(a, [addr(b), addr(c)])
    const again = a.node.channels.open(b.node.did, 'sender-restart')
    expect(a.node.channels.list().find(r => r.name === 'sender-restart')?.status).toBe('open')
    const more = await sendAll(again, 301, 320)
    expect(more[0].seq).toBe(301)
    await again.whenAcked(320)
    const all = [...sent, ...more]
    expect(checkHistory({ sent: all, handled: await committed(b.node, 'sender-restart'), acked: 320 })).toEqual(CLEAN)
    expect((await committed(b.node, 'sender-restart')).map(h => h.seq)).toEqual(all.map(s => s.seq))
  })

  it('a receiver stopped before it acknowledged keeps its checkpoint: nothing is handled twice', async () => {
    const calls: number[] = []
    const g = gate()
    b.node.channels.receive('receiver-restart', recorder(calls, async (seq) => { if (seq === 150) { g.enter(seq); await g.wait } }))
    const ch = a.node.channels.open(b.node.did, 'receiver-restart')
    const sent = await sendAll(ch, 1, 200)
    await g.entered
    const checkpoint = b.node.channels.list().find(r => r.name === 'receiver-restart')?.checkpoint ?? -1
    expect(checkpoint).toBeGreaterThan(0)
    expect(checkpoint).toBeLessThan(150)
    await b.node.stop()
    // the stalled handler finishes on a stopped node: its group is not committed
    g.open()
    b.node = await start(b)
    const after: number[] = []
    b.node.channels.receive('receiver-restart', recorder(after))
    await ch.whenAcked(200)
    // the restarted receiver was handed only what follows its checkpoint
    expect(after[0]).toBe(checkpoint + 1)
    expect(after).toEqual(Array.from({ length: 200 - checkpoint }, (_, i) => checkpoint + 1 + i))
    expect(checkHistory({ sent, handled: await committed(b.node, 'receiver-restart'), acked: 200 })).toEqual(CLEAN)
  })

  it('a full window makes send wait, and a full queue of sends fails with Overloaded', async () => {
    const calls: number[] = []
    const g = gate()
    b.node.channels.receive('window', recorder(calls, async (seq) => { if (seq === 1) { g.enter(seq); await g.wait } }))
    const ch = a.node.channels.open(b.node.did, 'window', { window: 8, outboxLimit: 16, maxQueuedSends: 4 })
    const sent = await sendAll(ch, 1, 16)
    await g.entered
    let resolved = 0
    const waiting = Array.from({ length: 4 }, (_, i) => ch.send({ n: 17 + i }).then(r => { resolved++; return { seq: r.seq, msg: { n: 17 + i } } }))
    await expect(ch.send({ n: 21 })).rejects.toMatchObject({ name: 'Overloaded' })
    // a round trip to the receiver: the waiting sends had every chance to resolve, and did not
    const row = (await a.node.invoke<{ channels: Array<{ name: string, outbox: number, inFlight: number }> }>(a.node.did, '/dms/node/channels/list', {}, T)).channels.find(r => r.name === 'window')
    expect(resolved).toBe(0)
    expect(row?.outbox).toBe(16)
    expect(row?.inFlight).toBeLessThanOrEqual(8)
    g.open()
    const rest = await Promise.all(waiting)
    await ch.whenAcked(20)
    expect(checkHistory({ sent: [...sent, ...rest], handled: await committed(b.node, 'window'), acked: 20 })).toEqual(CLEAN)
    expect(calls).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
  })

  it('a channel the receiver does not authorize is refused once, reported with the typed error, and not retried', async () => {
    c.node.channels.receive('refused', () => {})
    let refused!: (e: { err: DmsError, seq: number | undefined }) => void
    const reported = new Promise<{ err: DmsError, seq: number | undefined }>(resolve => { refused = resolve })
    const ch = a.node.channels.open(c.node.did, 'refused', { onRefused: (err, seq) => { refused({ err, seq }) } })
    const r = await reported
    expect(r.err).toMatchObject({ name: 'Unauthorized' })
    expect(r.seq).toBeUndefined()
    expect(ch.status).toBe('refused')
    await expect(ch.send({ n: 1 })).rejects.toMatchObject({ name: 'Unauthorized' })
    // a heartbeat round trip later, the receiver still counted one refusal: the channel stopped
    await a.node.invoke(c.node.did, '/dms/channel/heartbeat', {}, T)
    expect(c.node.stats().refused.Unauthorized).toBe(1)
    expect(a.node.channels.list().find(x => x.name === 'refused')).toMatchObject({ status: 'refused' })
  })

  it('a message the receiver\'s schema refuses is reported with BadRequest, and the channel moves on', async () => {
    const calls: number[] = []
    b.node.channels.receive('typed', recorder(calls), { schema: z.object({ n: z.number() }) })
    const refusals: Array<{ name: string, seq: number | undefined }> = []
    const ch = a.node.channels.open(b.node.did, 'typed', { onRefused: (err, seq) => { refusals.push({ name: err.name, seq }) } })
    await ch.send({ n: 1 })
    await ch.send({ n: 'two' })
    const { seq } = await ch.send({ n: 3 })
    await ch.whenAcked(seq)
    expect(refusals).toEqual([{ name: 'BadRequest', seq: 2 }])
    expect(calls).toEqual([1, 3])
    expect(ch.status).toBe('open')
    expect(a.node.channels.list().find(x => x.name === 'typed')).toMatchObject({ failed: 1, acked: 3, outbox: 0 })
  })

  it('heartbeats find a stopped peer disconnected within interval × misses, and connected again when it is back', async () => {
    const calls: number[] = []
    b.node.channels.receive('liveness', recorder(calls))
    const ch = a.node.channels.open(b.node.did, 'liveness')
    await ch.whenAcked((await ch.send({ n: 1 })).seq)
    expect(a.node.channels.peers()).toContainEqual({ peer: b.node.peerId, state: 'connected' })
    // both ways: the receiver heartbeats its sender too
    expect(b.node.channels.peers()).toContainEqual({ peer: a.node.peerId, state: 'connected' })
    const stoppedAt = Date.now()
    await b.node.stop()
    await a.node.channels.waitFor(b.node.peerId, 'disconnected', 200 * 3 + 2_000)
    expect(Date.now() - stoppedAt).toBeLessThan(200 * 3 + 2_000)
    // sent while the peer is away: kept in the outbox, delivered when it is back
    const { seq } = await ch.send({ n: 2 })
    b.node = await start(b)
    b.node.channels.receive('liveness', recorder(calls))
    await a.node.channels.waitFor(b.node.peerId, 'connected', 10_000)
    await ch.whenAcked(seq)
    expect(calls).toEqual([1, 2])
  })
})
