/**
 * Framing of the actor stream: each frame is an unsigned LEB128 varint length, then that many
 * bytes. The reader is pure (bytes in, events out) so that it can be property-tested apart from
 * libp2p, and it never throws: a malformed length becomes an `error` event, after which the
 * stream cannot be re-synchronised and must be closed.
 *
 * An oversized frame does not break the stream: the reader keeps its first `headBytes` (enough
 * for the envelope header, so the receiver can answer the caller), skips the rest as it arrives,
 * and reads the next frame normally.
 */

/** 7 varint bytes hold 49 bits (512 TiB), still a safe integer: a longer length is garbage. */
const MAX_VARINT_BYTES = 7

export type FrameEvent =
  | { type: 'frame', frame: Uint8Array }
  | { type: 'oversize', head: Uint8Array, totalLength: number }
  | { type: 'error', reason: string }

export function varintLength (n: number): number {
  let len = 1
  while (n >= 0x80) { n = Math.floor(n / 0x80); len++ }
  return len
}

/** Writes `n` as an unsigned LEB128 varint at `offset`; returns the offset after it. */
export function writeVarint (n: number, out: Uint8Array, offset: number): number {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`varint must be a non-negative safe integer, got ${n}`)
  while (n >= 0x80) {
    out[offset++] = (n % 0x80) | 0x80
    n = Math.floor(n / 0x80)
  }
  out[offset++] = n
  return offset
}

/** The frame with its length prefix, in one buffer (one write, one muxer frame when small). */
export function encodeFrame (frame: Uint8Array): Uint8Array {
  const out = new Uint8Array(varintLength(frame.length) + frame.length)
  out.set(frame, writeVarint(frame.length, out, 0))
  return out
}

type State =
  | { kind: 'length', value: number, bytes: number }
  | { kind: 'body', buf: Uint8Array | undefined, filled: number, length: number }
  | { kind: 'skip', head: Uint8Array, headFilled: number, remaining: number, total: number }
  | { kind: 'failed' }

export class FrameReader {
  private state: State = { kind: 'length', value: 0, bytes: 0 }

  /**
   * @param maxFrameBytes frames longer than this are skipped and reported as `oversize`
   * @param headBytes how many first bytes of an oversized frame to keep
   */
  constructor (readonly maxFrameBytes: number, readonly headBytes: number) {}

  get failed (): boolean { return this.state.kind === 'failed' }

  /** Feeds one chunk; returns the events it completes, in order. Never throws. */
  push (chunk: Uint8Array): FrameEvent[] {
    const events: FrameEvent[] = []
    let i = 0
    while (i < chunk.length) {
      const s = this.state
      switch (s.kind) {
        case 'failed':
          return events
        case 'length': {
          const b = chunk[i++]
          s.value += (b & 0x7f) * 2 ** (7 * s.bytes)
          s.bytes++
          if ((b & 0x80) !== 0) {
            if (s.bytes >= MAX_VARINT_BYTES) {
              this.state = { kind: 'failed' }
              events.push({ type: 'error', reason: `frame length varint longer than ${MAX_VARINT_BYTES} bytes` })
              return events
            }
            break
          }
          this.startFrame(s.value, events)
          break
        }
        case 'body': {
          const want = s.length - s.filled
          const avail = chunk.length - i
          if (s.buf === undefined && avail >= want) {
            // The whole frame is in this chunk: hand out a view, no copy.
            events.push({ type: 'frame', frame: chunk.subarray(i, i + want) })
            i += want
            this.state = { kind: 'length', value: 0, bytes: 0 }
            break
          }
          s.buf ??= new Uint8Array(s.length)
          const n = Math.min(want, avail)
          s.buf.set(chunk.subarray(i, i + n), s.filled)
          s.filled += n
          i += n
          if (s.filled === s.length) {
            events.push({ type: 'frame', frame: s.buf })
            this.state = { kind: 'length', value: 0, bytes: 0 }
          }
          break
        }
        case 'skip': {
          if (s.headFilled < s.head.length) {
            const n = Math.min(s.head.length - s.headFilled, chunk.length - i)
            s.head.set(chunk.subarray(i, i + n), s.headFilled)
            s.headFilled += n
            i += n
            if (s.headFilled === s.head.length) {
              events.push({ type: 'oversize', head: s.head, totalLength: s.total })
              if (s.remaining === 0) this.state = { kind: 'length', value: 0, bytes: 0 }
            }
            break
          }
          const n = Math.min(s.remaining, chunk.length - i)
          s.remaining -= n
          i += n
          if (s.remaining === 0) this.state = { kind: 'length', value: 0, bytes: 0 }
          break
        }
      }
    }
    return events
  }

  private startFrame (length: number, events: FrameEvent[]): void {
    if (length > this.maxFrameBytes) {
      const keep = Math.min(this.headBytes, length)
      this.state = { kind: 'skip', head: new Uint8Array(keep), headFilled: 0, remaining: length - keep, total: length }
      if (keep === 0) {
        events.push({ type: 'oversize', head: new Uint8Array(0), totalLength: length })
      }
      return
    }
    if (length === 0) {
      events.push({ type: 'frame', frame: new Uint8Array(0) })
      this.state = { kind: 'length', value: 0, bytes: 0 }
      return
    }
    this.state = { kind: 'body', buf: undefined, filled: 0, length }
  }
}
