import { setMaxListeners } from 'node:events'
import { describe, expect, it } from 'vitest'
import { MAX_EVENT_WAITERS, createNodeEvents } from '../../src/node/events.js'

/** The node's event ring: bounded, read by sequence number, and a bounded number of waiting readers. */
describe('node events (ring)', () => {
  it('keeps the last `kept` events; first/last say what is kept and what was dropped', () => {
    const ev = createNodeEvents({ kept: 5, now: () => 0 })
    expect(ev.last).toBe(0)
    expect(ev.first).toBe(1)
    expect(ev.since(0)).toEqual([])
    for (let i = 0; i < 12; i++) ev.emit('node.state', { state: `s${i}` })
    expect(ev.last).toBe(12)
    expect(ev.first).toBe(8)
    expect(ev.since(0).map(e => e.seq)).toEqual([8, 9, 10, 11, 12])
    expect(ev.since(0)[0]).toMatchObject({ type: 'node.state', state: 's7', at: new Date(0).toISOString() })
  })

  it('since(after, limit): only events numbered after `after`, oldest first, at most `limit`', () => {
    const ev = createNodeEvents({ kept: 10 })
    for (let i = 0; i < 8; i++) ev.emit('hello.heard', { peer: `p${i}` })
    expect(ev.since(5).map(e => e.seq)).toEqual([6, 7, 8])
    expect(ev.since(2, 2).map(e => e.seq)).toEqual([3, 4])
    expect(ev.since(8)).toEqual([])
    expect(ev.since(99)).toEqual([])
  })

  it('wait resolves at the next event, or with [] when its signal aborts', async () => {
    const ev = createNodeEvents()
    ev.emit('node.started')
    // already there: at once
    expect((await ev.wait(0, new AbortController().signal)).map(e => e.seq)).toEqual([1])
    const waiting = ev.wait(1, new AbortController().signal)
    ev.emit('peer.connected', { peer: 'x' })
    expect((await waiting).map(e => e.type)).toEqual(['peer.connected'])
    const ac = new AbortController()
    const aborted = ev.wait(2, ac.signal)
    ac.abort()
    expect(await aborted).toEqual([])
  })

  it('refuses a reader beyond MAX_EVENT_WAITERS (Overloaded), and takes one again once a reader left', async () => {
    const ev = createNodeEvents()
    const ac = new AbortController()
    // one signal for all the readers: not a leak
    setMaxListeners(MAX_EVENT_WAITERS + 1, ac.signal)
    const readers = Array.from({ length: MAX_EVENT_WAITERS }, () => ev.wait(0, ac.signal))
    await expect(ev.wait(0, new AbortController().signal)).rejects.toMatchObject({ name: 'Overloaded' })
    expect(() => ev.subscribe(() => {})).toThrow(expect.objectContaining({ name: 'Overloaded' }))
    // one event answers every waiting reader, which then leave
    ev.emit('node.started')
    expect((await Promise.all(readers)).every(r => r.length === 1)).toBe(true)
    const unsubscribe = ev.subscribe(() => {})
    unsubscribe()
    ac.abort()
  })

  it('a listener that throws neither stops the emitter nor the other listeners', () => {
    const ev = createNodeEvents()
    const seen: number[] = []
    ev.subscribe(() => { throw new Error('broken listener') })
    ev.subscribe(e => { seen.push(e.seq) })
    ev.emit('node.started')
    ev.emit('node.state', { state: 'ready' })
    expect(seen).toEqual([1, 2])
  })
})
