import { describe, expect, it } from 'vitest'
import { HELLO_SCORE_MUTUAL, MAX_HANDSHAKES } from '../../src/network/constants.js'
import { Handshakes } from '../../src/network/hello.js'

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
