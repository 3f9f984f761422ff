import { mkdtemp, open, readFile, rm, type FileHandle } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { LogFiles } from '../../../src/services/allocations/logs.js'

/**
 * The writer holds an O_APPEND descriptor for the whole test, as a workload does: rotation must
 * work under it (copy, then truncate), and offsets must stay valid across rotations.
 */
describe('allocation log files', () => {
  let dir: string
  let writer: FileHandle
  let logs: LogFiles
  const line = (i: number): string => `line ${String(i).padStart(5, '0')} ${'x'.repeat(50)}\n` // 62 bytes

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dms-logs-'))
    logs = new LogFiles({ dir, maxBytes: 4096, keep: 2 })
    writer = await open(logs.path('stdout'), 'a')
  })
  afterEach(async () => {
    await writer.close()
    await rm(dir, { recursive: true, force: true })
  })

  async function write (from: number, to: number): Promise<string> {
    let s = ''
    for (let i = from; i < to; i++) s += line(i)
    await writer.write(s)
    return s
  }

  async function readAll (offset: number): Promise<{ text: string, skipped: number, next: number }> {
    let text = ''
    let skipped = 0
    let next = offset
    for (let i = 0; i < 1000; i++) {
      const c = await logs.read({ stream: 'stdout', offset: next, maxBytes: 1000 })
      text += c.data
      skipped += c.skipped ?? 0
      next = c.nextOffset
      if (c.eof) return { text, skipped, next }
    }
    throw new Error('read did not reach the end in 1000 chunks')
  }

  it('reads in chunks from any offset, and says where it ends', async () => {
    const all = await write(0, 10)
    const a = await logs.read({ stream: 'stdout', offset: 0, maxBytes: 100 })
    expect(a).toEqual({ data: all.slice(0, 100), nextOffset: 100, eof: false })
    expect((await readAll(100)).text).toBe(all.slice(100))
    expect(await logs.read({ stream: 'stdout', offset: all.length, maxBytes: 100 })).toEqual({ data: '', nextOffset: all.length, eof: true })
    // An offset past the end answers the end.
    expect(await logs.read({ stream: 'stdout', offset: all.length + 999, maxBytes: 100 })).toEqual({ data: '', nextOffset: all.length, eof: true })
    await expect(logs.read({ stream: 'stdout', offset: -1, maxBytes: 10 })).rejects.toMatchObject({ name: 'InvalidArgument' })
  })

  it('rotates past the cap under a live writer; offsets stay valid and nothing kept is lost', async () => {
    const first = await write(0, 80) // 4960 bytes > 4096
    expect(await logs.rotateIfNeeded()).toEqual(['stdout'])
    expect((await readFile(logs.path('stdout'), 'utf8'))).toBe('')
    expect(await readFile(`${logs.path('stdout')}.1`, 'utf8')).toBe(first)
    // The writer's next bytes land at the start of the truncated file (O_APPEND).
    const second = await write(80, 90)
    expect(await readFile(logs.path('stdout'), 'utf8')).toBe(second)
    expect(await logs.written('stdout')).toBe(first.length + second.length)
    // From 0 across the rotated file into the current one; and from inside the current one.
    expect(await readAll(0)).toEqual({ text: first + second, skipped: 0, next: first.length + second.length })
    expect((await readAll(first.length + 62)).text).toBe(second.slice(62))
    expect(await logs.rotateIfNeeded()).toEqual([])
  })

  it('drops the oldest generation beyond `keep` and reports the gap', async () => {
    const g1 = await write(0, 70)
    await logs.rotateIfNeeded()
    const g2 = await write(70, 140)
    await logs.rotateIfNeeded()
    const g3 = await write(140, 210)
    await logs.rotateIfNeeded()
    const tail = await write(210, 215)
    const r = await readAll(0)
    expect(r.skipped).toBe(g1.length)
    expect(r.text).toBe(g2 + g3 + tail)
    expect(r.next).toBe(g1.length + g2.length + g3.length + tail.length)
  })

  it('never cuts a UTF-8 character between two reads', async () => {
    await writer.write('a€b') // € is 3 bytes
    const c1 = await logs.read({ stream: 'stdout', offset: 0, maxBytes: 2 })
    expect(c1).toMatchObject({ data: 'a', nextOffset: 1 })
    const c2 = await logs.read({ stream: 'stdout', offset: 1, maxBytes: 3 })
    expect(c2).toMatchObject({ data: '€', nextOffset: 4 })
    // A reader asking for less than one character still advances.
    const c3 = await logs.read({ stream: 'stdout', offset: 1, maxBytes: 1 })
    expect(c3.nextOffset).toBe(2)
  })

  it('a long poll resolves when output arrives, and false at the deadline', async () => {
    await write(0, 1)
    const offset = await logs.written('stdout')
    const ac = new AbortController()
    const waiting = logs.waitFor({ stream: 'stdout', offset, signal: ac.signal })
    await write(1, 2)
    expect(await waiting).toBe(true)
    // Nothing new after the end: the caller's deadline answers.
    const end = await logs.written('stdout')
    expect(await logs.waitFor({ stream: 'stdout', offset: end, signal: AbortSignal.timeout(200) })).toBe(false)
    // Already there: at once.
    expect(await logs.waitFor({ stream: 'stdout', offset: 0, signal: AbortSignal.timeout(60_000) })).toBe(true)
  })
})
