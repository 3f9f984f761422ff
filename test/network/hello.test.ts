import { describe, expect, it } from 'vitest'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { HELLO_PEERS_PER_INTERVAL, HELLO_SCORE_MUTUAL, MAX_HANDSHAKES } from '../../src/network/constants.js'
import { Handshakes, helloPeriod } from '../../src/network/hello.js'
import { PeerBook } from '../../src/network/peer-book.js'
import { openDb } from '../../src/store/db.js'

describe('hello handshakes', () => {
  it('hold at most their bound, forgetting the least recently touched peer', () => {
    const h = new Handshakes(3)
    for (const p of ['p1', 'p2', 'p3']) h.heard(p)
    h.answered('p1') // p1 touched: p2 is now the least recent
    h.heard('p4')
    expect(h.known().sort()).toEqual(['p1', 'p3', 'p4'])
    expect(h.appScore('p1')).toBe(HELLO_SCORE_MUTUAL)
    expect(h.appScore('p2')).toBe(0)
    // Reading a score touches nothing: it is gossipsub's hot path.
    h.appScore('p3')
    h.heard('p5')
    expect(h.known().sort()).toEqual(['p1', 'p4', 'p5'])
  })

  it('are bounded by MAX_HANDSHAKES by default, whatever number of hellos arrives', () => {
    const h = new Handshakes()
    for (let i = 0; i < MAX_HANDSHAKES + 500; i++) h.heard(`p${i}`)
    expect(h.size).toBe(MAX_HANDSHAKES)
    expect(h.known()[0]).toBe('p500')
  })
})

describe('rate-scaled hello (specs/membership.md)', () => {
  it('announces every interval up to K known peers, then every interval × n / K', () => {
    expect(helloPeriod(30_000, 0)).toBe(30_000)
    expect(helloPeriod(30_000, HELLO_PEERS_PER_INTERVAL)).toBe(30_000)
    expect(helloPeriod(30_000, 10 * HELLO_PEERS_PER_INTERVAL)).toBe(300_000)
    // the whole network's periodic hellos per interval stay ~K whatever its size
    for (const n of [100, 1_000, 10_000]) expect(n * 30_000 / helloPeriod(30_000, n)).toBeCloseTo(HELLO_PEERS_PER_INTERVAL, 0)
    expect(helloPeriod(30_000, 1_000, Infinity)).toBe(30_000)
  })

  it('forgets peers silent since the cutoff, but not connected ones nor peers never heard in a hello', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dms-hello-'))
    const db = await openDb(dir)
    const evicted: string[] = []
    const book = new PeerBook(db, {}, { connected: () => ['connected'], onEvict: (id) => { evicted.push(id) } })
    const old = new Date(Date.now() - 60_000).toISOString()
    await book.merge('silent', { did: 'did:key:z1', lastHelloAt: old })
    await book.merge('connected', { did: 'did:key:z2', lastHelloAt: old })
    await book.merge('dialled', { addrs: ['/ip4/127.0.0.1/tcp/1'] })
    await book.merge('fresh', { did: 'did:key:z3', lastHelloAt: new Date().toISOString() })
    expect(await book.forgetSilent(Date.now() - 30_000)).toBe(1)
    expect(evicted).toEqual(['silent'])
    expect((await book.all()).map(r => r.id).sort()).toEqual(['connected', 'dialled', 'fresh'])
    expect(await book.size()).toBe(3)
    await db.close()
    await rm(dir, { recursive: true, force: true })
  })
})
