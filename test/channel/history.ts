/**
 * The history checker of issue 8: what was sent, what the receiver's handler committed, and what
 * the sender saw acknowledged. The rules: nothing acknowledged is lost, nothing is handled twice,
 * order per channel holds, and what was handled is what was sent under that number.
 */
export interface History {
  /** Every message the sender's `send` resolved, with the number it got. */
  sent: Array<{ seq: number, msg: unknown }>
  /** Every handler effect committed at the receiver (read back from its level store), in commit order. */
  handled: Array<{ seq: number, msg: unknown }>
  /** The sender's cumulative ack. */
  acked: number
}

export interface Verdict { lost: number[], duplicated: number[], reordered: number[], altered: number[] }

export function checkHistory (h: History): Verdict {
  const bySeq = new Map(h.sent.map(s => [s.seq, JSON.stringify(s.msg)]))
  const seen = new Set<number>()
  const v: Verdict = { lost: [], duplicated: [], reordered: [], altered: [] }
  let prev = 0
  for (const x of h.handled) {
    if (seen.has(x.seq)) v.duplicated.push(x.seq)
    seen.add(x.seq)
    if (x.seq <= prev) v.reordered.push(x.seq)
    prev = Math.max(prev, x.seq)
    if (bySeq.get(x.seq) !== JSON.stringify(x.msg)) v.altered.push(x.seq)
  }
  for (const s of h.sent) if (s.seq <= h.acked && !seen.has(s.seq)) v.lost.push(s.seq)
  return v
}

export const CLEAN: Verdict = { lost: [], duplicated: [], reordered: [], altered: [] }
