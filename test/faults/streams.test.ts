import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ChannelServiceInit } from '../../src/channel/index.js'
import { createLan, heal, linkDown, linkUp, partition, type Lan } from '../e2e/netns.js'
import { skipNote, unavailable } from './faults.js'
import { Side, type Driver, type Event } from './procs.js'

/**
 * Streams under real faults (issue 8, "liveness on both sides"): a writer and a reader, each a
 * process of its own (test/faults/driver.ts) in a network namespace of its own. One scenario per
 * liveness case: the reader killed -9, the reader that stops reading, the writer killed -9, a
 * silent partition (iptables DROP) and a loud one (link down). In each, both ends must be over
 * with a typed error that names the side, within the bound, and free the stream (open count 0).
 */
const HEARTBEAT_MS = 300
const MISSES = 3
const CHANNELS: ChannelServiceInit = { heartbeatMs: HEARTBEAT_MS, heartbeatMisses: MISSES, callTimeoutMs: 3_000 }
/**
 * specs/streams.md: a dead peer is found within interval × misses after its last answer, plus
 * one interval for the beat in flight; the rest is slack for processes on a loaded 2-core
 * machine and the pipe that reports the event to the test.
 */
const BOUND_MS = HEARTBEAT_MS * MISSES + HEARTBEAT_MS + 3_000
/** A writer with no credit for this long ends the stream (`stalled`): short, so that the test sees it. */
const STALL_MS = 3_000
/** The reader's window: small, so that a reader that stops reading stops the writer quickly. */
const WINDOW = 16 * 1024

interface Over extends Event { role: 'reader' | 'writer', id: string, error: { name: string, side?: string, reason?: string } | null, chunks: number }

describe.skipIf(unavailable !== undefined)(`stream liveness under faults, in network namespaces${skipNote}`, () => {
  let dir: string
  let lan: Lan | undefined
  let writer: Side
  let reader: Side

  const ensure = async (s: Side): Promise<Driver> => s.driver?.alive === true ? s.driver : await s.start()
  /** Opens a stream of ticks from the writer's process to the reader's; resolves once the reader has its first chunk. */
  const open = async (req: { everyMs?: number, pad?: number } = {}): Promise<{ id: string, r: Driver, w: Driver }> => {
    const [w, r] = [await ensure(writer), await ensure(reader)]
    const { id } = await r.call<{ id: string }>('read', { target: writer.peerId, window: WINDOW, ...req })
    await r.event(e => e.event === 'reading' && e.id === id, 30_000, 'first chunk')
    return { id, r, w }
  }
  const over = async (d: Driver, id: string, ms: number): Promise<Over> => await d.event(e => e.event === 'over' && e.id === id, ms, `the end of stream ${id}`) as Over
  const openCount = async (d: Driver): Promise<number> => { const c = (await d.call<{ streamCount: { readers: number, writers: number } }>('status')).streamCount; return c.readers + c.writers }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dms-faults-streams-'))
    lan = await createLan(2)
    const [hw, hr] = lan.hosts
    writer = await Side.make('writer', hw, join(dir, 'writer'), { role: 'writer', channels: CHANNELS, streams: { stallMs: STALL_MS } })
    reader = await Side.make('reader', hr, join(dir, 'reader'), { role: 'reader', channels: CHANNELS })
    Object.assign(reader.config, { bootstrap: [writer.addr] })
    await writer.start()
    await reader.start()
  }, 180_000)
  afterAll(async () => {
    await writer?.driver?.kill9()
    await reader?.driver?.kill9()
    await lan?.destroy()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  it('a reader that stops reading stops the writer (credit holds: nothing sent past it), which ends the stream after the stall bound', async () => {
    // as fast as credit allows, ~1 KiB a chunk: the writer is ahead of the reader at once
    const { id, r, w } = await open({ pad: 1_000 })
    const { consumed } = await r.call<{ consumed: number }>('pause')
    const t = Date.now()
    const stalled = await over(w, id, STALL_MS + BOUND_MS)
    const took = Date.now() - t
    const rStatus = await r.call<{ streams: Array<{ id: string, buffered: number }> }>('status')
    const wStatus = await w.call<{ mem: { rss: number } }>('status')
    console.log(`reader paused after ${consumed} chunks: the writer ended the stream ${took} ms later, having sent ${stalled.chunks} chunks: ${stalled.error?.name} ${stalled.error?.reason}; writer rss ${(wStatus.mem.rss / 2 ** 20).toFixed(0)} MiB`)
    expect(stalled.error).toMatchObject({ name: 'StreamLost', side: 'reader', reason: 'stalled' })
    // credit held: the writer sent at most what the reader consumed (one more chunk may have been
    // in its hands when it paused) plus its window, in chunks of ≥ 1,000 bytes of JSON
    expect(stalled.chunks).toBeLessThanOrEqual(consumed + 1 + Math.floor(WINDOW / 1_000))
    // the reader's end is over too (the writer told it), holding at most its window
    expect(rStatus.streams.filter(s => s.id === id)).toEqual([])
    expect(await openCount(w)).toBe(0)
    await r.call('resume')
    // the reader, reading again, gets what it held and then the writer's typed error
    const rOver = await over(r, id, BOUND_MS)
    expect(rOver.error).toMatchObject({ name: 'StreamLost', side: 'reader', reason: 'stalled' })
    expect(await openCount(r)).toBe(0)
  })

  it('a silent partition (iptables DROP) ends the stream on both sides with StreamLost within the bound', async () => {
    const { id, r, w } = await open({ everyMs: 1_000 })
    await partition(reader.host)
    const t = Date.now()
    try {
      const [wo, ro] = await Promise.all([over(w, id, BOUND_MS), over(r, id, BOUND_MS)])
      console.log(`silent partition: writer told after ${wo.at - t} ms, reader after ${ro.at - t} ms`)
      expect(wo.error).toMatchObject({ name: 'StreamLost', side: 'reader', reason: 'unreachable' })
      expect(ro.error).toMatchObject({ name: 'StreamLost', side: 'writer', reason: 'unreachable' })
      expect([await openCount(w), await openCount(r)]).toEqual([0, 0])
    } finally {
      await heal(reader.host)
    }
  })

  it('a loud fault (the reader host\'s link down) ends the stream on both sides with StreamLost within the bound', async () => {
    const { id, r, w } = await open({ everyMs: 1_000 })
    await linkDown(reader.host)
    const t = Date.now()
    try {
      const [wo, ro] = await Promise.all([over(w, id, BOUND_MS), over(r, id, BOUND_MS)])
      console.log(`link down: writer told after ${wo.at - t} ms, reader after ${ro.at - t} ms`)
      expect(wo.error).toMatchObject({ name: 'StreamLost', side: 'reader' })
      expect(ro.error).toMatchObject({ name: 'StreamLost', side: 'writer' })
      expect([await openCount(w), await openCount(r)]).toEqual([0, 0])
    } finally {
      await linkUp(reader.host)
    }
  })

  it('kill -9 of the reader: the writer frees the stream within the bound', async () => {
    const { id, r, w } = await open({ everyMs: 1_000 })
    const t = Date.now()
    await r.kill9()
    const wo = await over(w, id, BOUND_MS)
    console.log(`reader killed: writer told after ${wo.at - t} ms: ${wo.error?.name} ${wo.error?.side} ${wo.error?.reason}`)
    expect(wo.error).toMatchObject({ name: 'StreamLost', side: 'reader' })
    expect(await openCount(w)).toBe(0)
  })

  it('kill -9 of the writer: the reader gets StreamLost within the bound instead of waiting', async () => {
    const { id, r, w } = await open({ everyMs: 1_000 })
    const t = Date.now()
    await w.kill9()
    const ro = await over(r, id, BOUND_MS)
    console.log(`writer killed: reader told after ${ro.at - t} ms: ${ro.error?.name} ${ro.error?.side} ${ro.error?.reason}`)
    expect(ro.error).toMatchObject({ name: 'StreamLost', side: 'writer', reason: 'unreachable' })
    expect(await openCount(r)).toBe(0)
  })
})
