import { describe, expect, it } from 'vitest'
import { Mailbox } from '../../src/actor/mailbox.js'
import type { DmsError } from '../../src/lib/errors.js'

/** The mailbox's slot accounting, for jobs that end at once, later, or by throwing. */
describe('actor mailbox', () => {
  function mailbox (concurrency: number, capacity: number): { box: Mailbox, errors: unknown[] } {
    const errors: unknown[] = []
    return { box: new Mailbox({ concurrency, capacity }, err => { errors.push(err) }), errors }
  }
  const noRefuse = (): void => { throw new Error('refused') }

  it('frees the slot of a job that throws at once, and reports the error', () => {
    const { box, errors } = mailbox(1, 0)
    expect(box.admit(() => { throw new Error('bug') }, noRefuse)).toBe('ok')
    expect(errors).toHaveLength(1)
    expect(box.depth).toEqual({ running: 0, queued: 0 })
    expect(box.admit(() => undefined, noRefuse)).toBe('ok')
  })

  it('holds a slot until a job\'s promise settles, then runs what waited', async () => {
    const { box } = mailbox(1, 1)
    let release!: () => void
    const held = new Promise<void>(resolve => { release = resolve })
    const ran: string[] = []
    let secondDone!: () => void
    const second = new Promise<void>(resolve => { secondDone = resolve })
    expect(box.admit(async () => { await held; ran.push('first') }, noRefuse)).toBe('ok')
    expect(box.admit(() => { ran.push('second'); secondDone(); return undefined }, noRefuse)).toBe('ok')
    expect(box.admit(() => undefined, noRefuse)).toBe('full')
    expect(box.depth).toEqual({ running: 1, queued: 1 })
    release()
    await second
    expect(ran).toEqual(['first', 'second'])
    expect(box.depth).toEqual({ running: 0, queued: 0 })
  })

  it('starts waiting jobs round-robin across keys: a quiet key waits behind one job of each busy key', async () => {
    const errors: unknown[] = []
    const box = new Mailbox({ concurrency: 1, capacity: 10_000, perKey: 5_000 }, err => { errors.push(err) })
    let release!: () => void
    const held = new Promise<void>(resolve => { release = resolve })
    const ran: string[] = []
    let allDone!: () => void
    const done = new Promise<void>(resolve => { allDone = resolve })
    const TOTAL = 2 * 3_000 + 1
    const job = (key: string) => () => { ran.push(key); if (ran.length === TOTAL) allDone(); return undefined }
    expect(box.admit(async () => { await held }, noRefuse, 'busy-1')).toBe('ok')
    for (let i = 0; i < 3_000; i++) expect(box.admit(job('busy-1'), noRefuse, 'busy-1')).toBe('ok')
    for (let i = 0; i < 3_000; i++) expect(box.admit(job('busy-2'), noRefuse, 'busy-2')).toBe('ok')
    expect(box.admit(job('quiet'), noRefuse, 'quiet')).toBe('ok')
    expect(box.depth).toEqual({ running: 1, queued: TOTAL })
    release()
    await done
    expect(ran.indexOf('quiet')).toBeLessThanOrEqual(2)
    // within a key, arrival order; nothing lost
    expect(ran.filter(k => k === 'busy-1')).toHaveLength(3_000)
    expect(ran.filter(k => k === 'busy-2')).toHaveLength(3_000)
    expect(errors).toEqual([])
  })

  it('refuses a key past its own bound while other keys still get in', () => {
    const { box } = (() => ({ box: new Mailbox({ concurrency: 1, capacity: 100, perKey: 2 }, () => {}) }))()
    expect(box.admit(async () => { await new Promise(() => {}) }, noRefuse, 'a')).toBe('ok')
    expect(box.admit(() => undefined, noRefuse, 'a')).toBe('ok')
    expect(box.admit(() => undefined, noRefuse, 'a')).toBe('ok')
    expect(box.admit(() => undefined, noRefuse, 'a')).toBe('full')
    expect(box.admit(() => undefined, noRefuse, 'b')).toBe('ok')
    expect(box.depth).toEqual({ running: 1, queued: 3 })
  })

  // Issue 12 item 11: a queued job that threw synchronously escaped from inside `.finally` as an
  // unhandled rejection, and the jobs behind it never ran.
  it('keeps draining when a queued job throws synchronously, with no unhandled rejection', async () => {
    const { box, errors } = mailbox(1, 3)
    const unhandled: unknown[] = []
    const onUnhandled = (r: unknown): void => { unhandled.push(r) }
    process.on('unhandledRejection', onUnhandled)
    try {
      let release!: () => void
      const held = new Promise<void>(resolve => { release = resolve })
      const ran: string[] = []
      let lastDone!: () => void
      const last = new Promise<void>(resolve => { lastDone = resolve })
      box.admit(async () => { await held }, noRefuse)
      box.admit(() => { throw new Error('queued bug') }, noRefuse)
      box.admit(async () => { await Promise.resolve(); ran.push('after') }, noRefuse)
      box.admit(() => { ran.push('last'); lastDone(); return undefined }, noRefuse)
      release()
      await last
      // one macrotask: an unhandled rejection would have been reported by now
      await new Promise(resolve => setImmediate(resolve))
      expect(ran).toEqual(['after', 'last'])
      expect(errors.map(e => (e as Error).message)).toEqual(['queued bug'])
      expect(unhandled).toEqual([])
      expect(box.depth).toEqual({ running: 0, queued: 0 })
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })

  it('closes: refuses what waits with NotRunning, admits nothing more, and resolves once idle', async () => {
    const { box } = mailbox(1, 2)
    let release!: () => void
    const held = new Promise<void>(resolve => { release = resolve })
    const refused: string[] = []
    box.admit(async () => { await held }, noRefuse)
    box.admit(() => undefined, (e: DmsError) => { refused.push(e.name) })
    const closed = box.close('refuse')
    expect(refused).toEqual(['NotRunning'])
    expect(box.admit(() => undefined, noRefuse)).toBe('closed')
    let idle = false
    void closed.then(() => { idle = true })
    await Promise.resolve()
    expect(idle).toBe(false)
    release()
    await closed
    expect(box.depth).toEqual({ running: 0, queued: 0 })
  })

  it('closes with drain: waiting jobs still run', async () => {
    const { box } = mailbox(1, 2)
    let release!: () => void
    const held = new Promise<void>(resolve => { release = resolve })
    const ran: number[] = []
    box.admit(async () => { await held; ran.push(1) }, noRefuse)
    box.admit(async () => { await Promise.resolve(); ran.push(2) }, noRefuse)
    const closed = box.close('drain')
    release()
    await closed
    expect(ran).toEqual([1, 2])
  })

  it('runs read-only jobs beside a held slot, within their own bound', async () => {
    const errors: unknown[] = []
    const box = new Mailbox({ concurrency: 1, capacity: 0, readers: 2 }, err => { errors.push(err) })
    let release!: () => void
    const held = new Promise<void>(resolve => { release = resolve })
    expect(box.admit(async () => { await held }, noRefuse)).toBe('ok')
    expect(box.admit(() => undefined, noRefuse)).toBe('full')
    let reads = 0
    let endReaders!: () => void
    const readersHeld = new Promise<void>(resolve => { endReaders = resolve })
    expect(box.admitReader(() => { reads++; return undefined })).toBe('ok') // while the slot is held
    expect(box.admitReader(async () => { await readersHeld })).toBe('ok')
    expect(box.admitReader(async () => { await readersHeld })).toBe('ok')
    expect(box.admitReader(() => undefined)).toBe('full')
    expect(reads).toBe(1)
    endReaders()
    release()
    await box.close('drain')
    expect(box.admitReader(() => undefined)).toBe('closed')
    expect(errors).toEqual([])
  })
})
