import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createNode, type Node } from '../../src/index.js'
import { newIdentity } from '../../src/identity/identity.js'
import { isDmsError, type DmsError } from '../../src/lib/errors.js'
import type { StreamReader, StreamWriter } from '../../src/stream/index.js'
import { FAST_CHANNELS, LIVENESS_BOUND_MS, relayBehavior, silentBehavior, ticksBehavior, writers } from './ticks.js'

/**
 * Streams between real nodes on loopback (issue 8): order and credit, cancel from each side,
 * liveness when either end's process is killed (a child process, SIGKILL), and heartbeats that
 * run only while something is open between the pair.
 */
const ROOT = resolve(import.meta.dirname, '../..')

/** Polls state that has no event of its own (another node's books), bounded in time. */
async function until (check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

/** Resolves with the reason once the writer's stream is over (its signal is the event). */
async function over (w: StreamWriter): Promise<DmsError> {
  if (w.signal.aborted) return w.signal.reason as DmsError
  return await new Promise(resolve => { w.signal.addEventListener('abort', () => { resolve(w.signal.reason as DmsError) }, { once: true }) })
}

/**
 * Opens a stream to a node that is dialling this one (its bootstrap): until its dial lands,
 * the open is Unreachable, so it is tried again, a bounded number of times.
 */
async function openWhenConnected (n: Node, dest: string, behavior: string, request: Record<string, unknown>, opts: { window?: number } = {}): Promise<StreamReader> {
  for (let i = 0; i < 50; i++) {
    try {
      return await n.streams.open(dest, behavior, request, { timeoutMs: 5_000, ...opts })
    } catch (err) {
      if (!isDmsError(err, 'Unreachable')) throw err
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }
  throw new Error(`could not open ${behavior} on ${dest}`)
}

const open = (n: Node): number => { const c = n.streams.count(); return c.readers + c.writers }

describe('streams', () => {
  let dir: string
  let a: Node
  let b: Node
  const children: ChildProcess[] = []

  const child = async (mode: 'reader' | 'writer', bootstrap?: string): Promise<{ proc: ChildProcess, peerId: string, addr: string, reading: Promise<void> }> => {
    const proc = spawn(process.execPath, ['--import', 'tsx', 'test/stream/peer.ts', mode, await mkdtemp(join(dir, mode)), ...(bootstrap !== undefined ? [bootstrap] : [])], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] })
    children.push(proc)
    const lines = createInterface({ input: proc.stdout! })
    let onReading!: () => void
    const reading = new Promise<void>(resolve => { onReading = resolve })
    const first = await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => { reject(new Error(`the ${mode} process did not start within 30 s`)) }, 30_000)
      lines.on('line', line => {
        if (line === 'reading') onReading()
        else if (line.startsWith('{')) { clearTimeout(t); resolve(line) }
      })
      proc.once('exit', code => { clearTimeout(t); reject(new Error(`the ${mode} process exited with ${code}`)) })
    })
    return { proc, ...JSON.parse(first) as { peerId: string, addr: string }, reading }
  }
  const kill9 = async (proc: ChildProcess): Promise<void> => {
    const exited = new Promise(resolve => proc.once('exit', resolve))
    proc.kill('SIGKILL')
    await exited
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dms-stream-'))
    b = await createNode({ dataDir: join(dir, 'b'), identity: await newIdentity(), channels: FAST_CHANNELS, config: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, helloIntervalMs: 60_000 } })
    b.handle(ticksBehavior)
    b.handle(silentBehavior)
    a = await createNode({ dataDir: join(dir, 'a'), identity: await newIdentity(), channels: FAST_CHANNELS, config: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, helloIntervalMs: 60_000, bootstrap: [b.addrs()[0]] } })
    a.handle(ticksBehavior)
    a.handle(relayBehavior)
  })
  afterAll(async () => {
    for (const p of children) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL')
    await a?.stop()
    await b?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('delivers chunks in order; a reader that does not read holds the writer to its window', async () => {
    const window = 4_096
    const r = await a.streams.open(b.peerId, '/test/stream/ticks', { count: 300, pad: 90 }, { window })
    const w = writers[writers.length - 1]
    // nothing is read: the writer sends one window's worth and waits for credit
    await until(() => w.blocked, 10_000, 'the writer waits for credit')
    expect(w.sent).toBeLessThanOrEqual(window)
    expect(w.sent).toBeGreaterThan(window - 200)
    // what is in flight lands in the reader's queue, and nothing more comes
    await until(() => a.streams.list().find(s => s.id === r.id)?.buffered === w.sent, 5_000, 'the chunks in flight arrived')
    expect(w.sent).toBeLessThanOrEqual(window)
    expect(w.chunks).toBeLessThan(300)
    const got: number[] = []
    for await (const c of r) {
      got.push((c as { n: number }).n)
      // the invariant, at every chunk: never more than the credit in flight or unread
      expect(w.sent).toBeLessThanOrEqual(w.credit)
    }
    expect(got).toEqual(Array.from({ length: 300 }, (_, i) => i + 1))
    expect(r.endInfo).toEqual({ ticks: 300 })
    expect(open(a)).toBe(0)
    expect(open(b)).toBe(0)
  })

  it('puts chunks that arrive out of order back in order, and refuses chunks from another node or past the credit', async () => {
    const r = await a.streams.open(b.peerId, '/test/stream/silent', {}, { window: 1_024 })
    const w = writers[writers.length - 1]
    // a chunk over a quarter window is refused (it could wait for credit that never comes); the stream goes on
    await expect(w.write('x'.repeat(300))).rejects.toMatchObject({ name: 'BadRequest', fields: { max: 256 } })
    expect(w.state).toBe('open')
    // b's root speaks the protocol by hand: chunk 2 before chunk 1
    const data = async (from: Node, seq: number, chunk: unknown): Promise<unknown> => await from.invoke(a.peerId, '/dms/stream/data', { id: r.id, seq, chunk }, { timeout: 5_000 })
    expect(await data(b, 2, 'two')).toEqual({ credit: 1_024 })
    await data(b, 1, 'one')
    await data(b, 1, 'one') // a duplicate: dropped
    expect((await r.next()).value).toBe('one')
    expect((await r.next()).value).toBe('two')
    expect(r.chunks).toBe(2)
    // a third node cannot address a stream of this pair, even knowing its id
    const c = await createNode({ dataDir: join(dir, 'c3'), identity: await newIdentity(), channels: FAST_CHANNELS, config: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, helloIntervalMs: 60_000, bootstrap: [a.addrs()[0]] } })
    try {
      let refusal: unknown
      for (let i = 0; i < 50; i++) {
        refusal = await data(c, 3, 'forged').catch((err: unknown) => err)
        if (!isDmsError(refusal, 'Unreachable')) break
        await new Promise(resolve => setTimeout(resolve, 100))
      }
      expect(refusal).toMatchObject({ name: 'NotFound' })
    } finally {
      await c.stop()
    }
    expect(r.chunks).toBe(2)
    // past the credit (1,024 bytes beyond the 10 read): refused, and the reader cancels the writer
    await expect(data(b, 3, 'x'.repeat(1_100))).rejects.toMatchObject({ name: 'BadRequest' })
    expect(await over(w)).toMatchObject({ name: 'StreamClosed', fields: { side: 'reader' } })
    await expect(r.next()).rejects.toMatchObject({ name: 'BadRequest' })
    expect(open(a)).toBe(0)
    expect(open(b)).toBe(0)
  })

  it('cancel by the reader stops the writer and frees both ends', async () => {
    const r = await a.streams.open(b.peerId, '/test/stream/ticks', { everyMs: 10 })
    const w = writers[writers.length - 1]
    expect((await r.next()).done).toBe(false)
    expect(open(b)).toBe(1)
    // what an operator sees: node status and the list behaviour count the same ends
    expect(await b.invoke(b.did, '/dms/node/status', {}, { timeout: 5_000 })).toMatchObject({ streams: { open: 1, readers: 0, writers: 1 } })
    r.cancel('seen enough')
    const why = await over(w)
    expect(why).toMatchObject({ name: 'StreamClosed', fields: { side: 'reader', reason: 'seen enough' } })
    expect(open(a)).toBe(0)
    expect(open(b)).toBe(0)
    expect((await r.next()).done).toBe(true)
  })

  it('cancel by the writer ends the reader with the writer\'s side and reason', async () => {
    const r = await a.streams.open(b.peerId, '/test/stream/ticks', { everyMs: 10 })
    const w = writers[writers.length - 1]
    expect((await r.next()).done).toBe(false)
    w.cancel('source closed')
    const err = await (async () => { try { for (let i = 0; i < 10_000; i++) if ((await r.next()).done === true) return undefined } catch (e) { return e as DmsError } })()
    expect(err).toMatchObject({ name: 'StreamClosed', fields: { side: 'writer', reason: 'source closed' } })
    expect(open(a)).toBe(0)
    expect(open(b)).toBe(0)
  })

  it('a writer whose reader process is killed (while the stream is idle) stops and frees it within the bound', async () => {
    const reader = await child('reader', a.addrs()[0])
    await reader.reading
    const w = writers[writers.length - 1]
    expect(w.peer).toBe(reader.peerId)
    const killedAt = Date.now()
    await kill9(reader.proc)
    const why = await over(w)
    const took = Date.now() - killedAt
    expect(isDmsError(why, 'StreamLost')).toBe(true)
    expect(why.fields).toMatchObject({ side: 'reader', peer: reader.peerId })
    expect(took).toBeLessThan(LIVENESS_BOUND_MS)
    expect(open(a)).toBe(0)
    console.log(`writer freed ${took} ms after the reader was killed (${String(why.fields.reason)})`)
  })

  it('a reader whose writer process is killed gets StreamLost within the bound', async () => {
    // the child dials this node (its bootstrap), so this node can reach it by its PeerId
    const writer = await child('writer', a.addrs()[0])
    const r = await openWhenConnected(a, writer.peerId, '/test/stream/ticks', { everyMs: 20 })
    expect((await r.next()).done).toBe(false)
    const killedAt = Date.now()
    await kill9(writer.proc)
    const err = await (async () => { try { for (let i = 0; i < 100_000; i++) if ((await r.next()).done === true) return undefined } catch (e) { return e as DmsError } })()
    const took = Date.now() - killedAt
    expect(err).toMatchObject({ name: 'StreamLost', fields: { side: 'writer', peer: writer.peerId } })
    expect(took).toBeLessThan(LIVENESS_BOUND_MS)
    expect(open(a)).toBe(0)
    console.log(`reader told ${took} ms after the writer was killed`)
  })

  it('a relayed stream: the reader\'s cancel reaches the source through the relay', async () => {
    // b reads a's relay, which reads b's ticks: two streams, b → a → b
    const r = await b.streams.open(a.peerId, '/test/stream/relay', { target: b.peerId })
    const source = writers[writers.length - 1] // the relay's own writer is not a ticks writer
    expect(source.peer).toBe(a.peerId)
    expect((await r.next()).done).toBe(false)
    expect(b.streams.count()).toEqual({ readers: 1, writers: 1 })
    expect(a.streams.count()).toEqual({ readers: 1, writers: 1 })
    r.cancel('enough')
    const why = await over(source)
    expect(why).toMatchObject({ name: 'StreamClosed', fields: { side: 'reader' } })
    await until(() => open(a) === 0 && open(b) === 0, 5_000, 'both relayed streams freed')
  })

  it('a relayed stream: the source process killed reaches the reader as StreamLost naming the source', async () => {
    const writer = await child('writer', a.addrs()[0])
    // until a is connected to the child, the relay's own open answers Unreachable
    const r = await openWhenConnected(b, a.peerId, '/test/stream/relay', { target: writer.peerId })
    expect((await r.next()).done).toBe(false)
    const killedAt = Date.now()
    await kill9(writer.proc)
    const err = await (async () => { try { for (let i = 0; i < 100_000; i++) if ((await r.next()).done === true) return undefined } catch (e) { return e as DmsError } })()
    const took = Date.now() - killedAt
    expect(err).toMatchObject({ name: 'StreamLost', fields: { side: 'writer', peer: writer.peerId } })
    expect(took).toBeLessThan(LIVENESS_BOUND_MS)
    await until(() => open(a) === 0 && open(b) === 0, 5_000, 'both relayed streams freed')
    console.log(`relayed reader told ${took} ms after the source was killed`)
  })

  it('heartbeats run between a pair only while a stream is open', async () => {
    // the streams above ended; their links' timers stopped with them
    const before = { a: a.channels.heartbeats(b.peerId), b: b.channels.heartbeats(a.peerId) }
    // nothing open: no heartbeat goes either way for several intervals
    await new Promise(resolve => setTimeout(resolve, 200 * 5))
    expect(a.channels.heartbeats(b.peerId)).toBe(before.a)
    expect(b.channels.heartbeats(a.peerId)).toBe(before.b)
    const r = await a.streams.open(b.peerId, '/test/stream/ticks', { everyMs: 50 })
    // open: both ends heartbeat the other (one heartbeat per pair, whatever the number of streams)
    const r2 = await a.streams.open(b.peerId, '/test/stream/ticks', { everyMs: 50 })
    await until(() => a.channels.heartbeats(b.peerId) >= before.a + 3 && b.channels.heartbeats(a.peerId) >= before.b + 3, 5_000, 'heartbeats both ways')
    const t0 = Date.now()
    const c0 = a.channels.heartbeats(b.peerId)
    await until(() => a.channels.heartbeats(b.peerId) >= c0 + 5, 5_000, 'five more heartbeats')
    // two streams, one heartbeat: about one per interval, not two
    expect(a.channels.heartbeats(b.peerId) - c0).toBeLessThanOrEqual(Math.ceil((Date.now() - t0) / 200) + 1)
    r.cancel('done')
    r2.cancel('done')
    await until(() => open(b) === 0, 5_000, 'the writers freed')
    const after = { a: a.channels.heartbeats(b.peerId), b: b.channels.heartbeats(a.peerId) }
    await new Promise(resolve => setTimeout(resolve, 200 * 5))
    expect(a.channels.heartbeats(b.peerId)).toBe(after.a)
    expect(b.channels.heartbeats(a.peerId)).toBe(after.b)
  })

  it('a reader that stops granting credit is cut off by the writer after the stall bound', async () => {
    const c = await createNode({ dataDir: join(dir, 'c'), identity: await newIdentity(), channels: FAST_CHANNELS, streams: { stallMs: 300 }, config: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, helloIntervalMs: 60_000, bootstrap: [b.addrs()[0]] } })
    try {
      c.handle(ticksBehavior)
      const r = await openWhenConnected(b, c.peerId, '/test/stream/ticks', { pad: 100 }, { window: 2_048 })
      const w = writers[writers.length - 1]
      const why = await over(w)
      expect(why).toMatchObject({ name: 'StreamLost', fields: { side: 'reader', reason: 'stalled' } })
      await expect(r.next().then(async () => { for (let i = 0; i < 100; i++) if ((await r.next()).done === true) return 'done'; return 'more' })).rejects.toMatchObject({ name: 'StreamLost', fields: { reason: 'stalled' } })
      expect(open(c)).toBe(0)
    } finally {
      await c.stop()
    }
  })
})
