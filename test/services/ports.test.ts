import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer, type Server } from 'node:net'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isDmsError, type DmsError } from '../../src/lib/errors.js'
import { createPortAllocator, isPortFreeOnOs, type PortAllocator, type PortAllocatorInit } from '../../src/services/ports/index.js'
import { log, manualClock, tempDb, type TempDb } from './helpers.js'

async function caught (p: Promise<unknown>): Promise<DmsError> {
  try { await p } catch (err) { if (isDmsError(err)) return err; throw err }
  throw new Error('expected a typed error')
}

/** A real listener held by "another process" for the test (an OS-level holder of the port). */
async function listen (port: number, host: string): Promise<Server> {
  const s = createServer()
  await new Promise<void>((resolve, reject) => { s.once('error', reject); s.listen({ port, host }, resolve) })
  return s
}
async function close (s: Server): Promise<void> { await new Promise<void>(resolve => s.close(() => { resolve() })) }

/** A port the OS hands out now (ephemeral), to build small ranges around. */
async function osPort (): Promise<number> {
  const s = await listen(0, '127.0.0.1')
  const a = s.address()
  await close(s)
  if (a === null || typeof a === 'string') throw new Error('no address')
  return a.port
}

/** For tests about the allocator's own bookkeeping: the OS check has its own tests. */
const allFree = async (): Promise<boolean> => true

describe('port allocator', () => {
  let t: TempDb
  let ports: PortAllocator
  const servers: Server[] = []
  const make = (init: PortAllocatorInit = {}): PortAllocator => createPortAllocator({ syncWrites: false, ...init }, { db: t.db, log, clock: manualClock().now })

  beforeEach(async () => { t = await tempDb('dms-ports-') })
  afterEach(async () => {
    await ports?.stop()
    for (const s of servers.splice(0)) await close(s)
    await t.cleanup()
  })

  it('hands out dynamic ports within the range, never the same one twice', async () => {
    ports = make({ range: { min: 40000, max: 40063 } })
    await ports.start()
    const got: number[] = []
    for (let i = 0; i < 8; i++) got.push(...await ports.reserve(`alloc-${i}`, { dynamic: 4 }))
    expect(got).toHaveLength(32)
    expect(new Set(got).size).toBe(32)
    for (const p of got) { expect(p).toBeGreaterThanOrEqual(40000); expect(p).toBeLessThanOrEqual(40063) }
    expect(ports.of('alloc-3')).toHaveLength(4)
    expect(ports.list()).toHaveLength(32)
  })

  it('never hands out a port another process listens on (loopback or wildcard)', async () => {
    const base = await osPort()
    const min = Math.min(base, 65535 - 7)
    const range = { min, max: min + 7 }
    // Hold half of the range from "another process": some on loopback, some on the wildcard.
    const held: number[] = []
    for (let p = range.min; p <= range.max && held.length < 4; p++) {
      try { servers.push(await listen(p, p % 2 === 0 ? '127.0.0.1' : '0.0.0.0')); held.push(p) } catch { /* taken already: fine, it is held */ }
    }
    expect(held.length).toBeGreaterThan(0)
    for (const p of held) expect(await isPortFreeOnOs(p)).toBe(false)
    ports = make({ range })
    await ports.start()
    for (const p of held) {
      const e = await caught(ports.reserve('specific', { ports: [p] }))
      expect(e.name).toBe('PortUnavailable')
      expect(e.fields.port).toBe(p)
    }
    const free: number[] = []
    for (let p = range.min; p <= range.max; p++) if (!held.includes(p) && await isPortFreeOnOs(p)) free.push(p)
    const got = await ports.reserve('dyn', { dynamic: free.length })
    expect(got.sort((a, b) => a - b)).toEqual(free)
    for (const p of got) expect(held).not.toContain(p)
    // Nothing left in the range: the next request is refused whole.
    expect((await caught(ports.reserve('more', { dynamic: 1 }))).name).toBe('PortUnavailable')
  })

  it('never hands out a port a separate process holds', async () => {
    const port = await osPort()
    const child = spawn(process.execPath, ['-e', `require('node:net').createServer().listen(${port}, '127.0.0.1', () => console.log('listening'))`], { stdio: ['ignore', 'pipe', 'inherit'] })
    try {
      const [line] = await once(child.stdout, 'data') as [Buffer]
      expect(line.toString()).toContain('listening')
      ports = make({ range: { min: port, max: port } })
      await ports.start()
      expect((await caught(ports.reserve('x', { ports: [port] }))).name).toBe('PortUnavailable')
      expect((await caught(ports.reserve('x', { dynamic: 1 }))).name).toBe('PortUnavailable')
    } finally {
      child.kill('SIGKILL')
      await once(child, 'exit')
    }
    // Once the holder is gone the port is handed out.
    expect(await ports.reserve('x', { dynamic: 1 })).toEqual([port])
  })

  it('is all or nothing', async () => {
    ports = make({ range: { min: 41000, max: 41009 }, isFree: allFree })
    await ports.start()
    await ports.reserve('a', { ports: [41000, 41001] })
    // 41001 is leased: the whole request is refused and 41002 stays free.
    const e = await caught(ports.reserve('b', { ports: [41002, 41001], dynamic: 2 }))
    expect(e.name).toBe('PortUnavailable')
    expect(ports.of('b')).toEqual([])
    expect(ports.list().map(l => l.port)).toEqual([41000, 41001])
    // More dynamic ports than remain: nothing is leased.
    expect((await caught(ports.reserve('c', { dynamic: 9 }))).fields).toMatchObject({ requested: 9, available: 8 })
    expect(ports.of('c')).toEqual([])
    expect((await caught(ports.reserve('d', { ports: [80] }))).name).toBe('PortUnavailable')
    expect((await caught(ports.reserve('e', { ports: [41005, 41005] }))).name).toBe('InvalidArgument')
  })

  it('does not collide under concurrent requests', async () => {
    ports = make({ range: { min: 42000, max: 42039 }, isFree: allFree })
    await ports.start()
    const results = await Promise.allSettled(Array.from({ length: 12 }, async (_, i) => await ports.reserve(`c${i}`, { dynamic: 4 })))
    const granted = results.flatMap(r => r.status === 'fulfilled' ? r.value : [])
    expect(new Set(granted).size).toBe(granted.length)
    expect(granted.length).toBe(40)
    expect(results.filter(r => r.status === 'rejected')).toHaveLength(2)
  })

  it('persists leases across a restart and releases by allocation id', async () => {
    ports = make({ range: { min: 43000, max: 43019 }, isFree: allFree })
    await ports.start()
    const a = await ports.reserve('a', { ports: [43005], dynamic: 3 })
    const b = await ports.reserve('b', { dynamic: 2 })
    await ports.stop()
    await t.reopen()
    ports = make({ range: { min: 43000, max: 43019 }, isFree: allFree })
    await ports.start()
    expect(ports.of('a')).toEqual(a)
    expect(ports.of('b')).toEqual(b)
    expect((await caught(ports.reserve('c', { ports: [43005] }))).fields).toMatchObject({ port: 43005, holder: 'a' })
    expect(await ports.release('a')).toEqual(a)
    expect(await ports.release('a')).toEqual([])
    await ports.stop()
    await t.reopen()
    ports = make({ range: { min: 43000, max: 43019 }, isFree: allFree })
    await ports.start()
    expect(ports.list().map(l => l.allocationId)).toEqual(['b', 'b'])
    expect(await ports.reserve('c', { ports: [43005] })).toEqual([43005])
  })

  it('refuses a bad range at construction', () => {
    expect(() => make({ range: { min: 5000, max: 4000 } })).toThrow(expect.objectContaining({ name: 'InvalidConfig' }))
    expect(() => make({ range: { min: 0, max: 70000 } })).toThrow(expect.objectContaining({ name: 'InvalidConfig' }))
  })
})
