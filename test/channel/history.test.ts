import { describe, expect, it } from 'vitest'
import { CLEAN, checkHistory } from './history.js'

describe('channel history checker', () => {
  const sent = [1, 2, 3, 4].map(seq => ({ seq, msg: { n: seq } }))
  it('passes a clean history, with unacknowledged messages not yet handled', () => {
    expect(checkHistory({ sent, handled: sent.slice(0, 3), acked: 3 })).toEqual(CLEAN)
  })
  it('names what was lost, handled twice, reordered or altered', () => {
    const v = checkHistory({ sent, handled: [sent[0], sent[2], sent[1], sent[2], { seq: 4, msg: { n: 5 } }], acked: 4 })
    expect(v).toEqual({ lost: [], duplicated: [3], reordered: [2, 3], altered: [4] })
    expect(checkHistory({ sent, handled: [sent[0]], acked: 2 }).lost).toEqual([2])
  })
})
