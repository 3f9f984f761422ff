import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { createFrameParser, createResumeFilter, sinceFor, timestampNs, type LogFrame, type ResumePoint } from '../../../src/services/executors/docker/logs.js'

/** One multiplexed frame as the engine sends it (`Tty: false`). */
function frame (stream: 1 | 2, payload: string | Buffer): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload
  const header = Buffer.alloc(8)
  header[0] = stream
  header.writeUInt32BE(body.length, 4)
  return Buffer.concat([header, body])
}

describe('docker log frames', () => {
  it('splits frames cut anywhere across chunks, with timestamps', () => {
    const wire = Buffer.concat([
      frame(1, '2026-12-02T05:41:45Z out1\n'),
      frame(2, '2026-12-02T05:41:45.123456789Z err 1\n'),
      frame(1, '2026-12-02T05:41:46Z partial')
    ])
    for (let cut = 0; cut <= wire.length; cut++) {
      const p = createFrameParser({ timestamps: true })
      const frames = [...p.push(wire.subarray(0, cut)), ...p.push(wire.subarray(cut))]
      expect(frames.map(f => [f.stream, f.ts, f.data.toString()])).toEqual([
        ['stdout', '2026-12-02T05:41:45Z', 'out1\n'],
        ['stderr', '2026-12-02T05:41:45.123456789Z', 'err 1\n'],
        ['stdout', '2026-12-02T05:41:46Z', 'partial']
      ])
    }
  })

  it('keeps an exec stream (no timestamps) byte for byte, spaces included', () => {
    const p = createFrameParser({ timestamps: false })
    expect(p.push(frame(1, 'a b c\n')).map(f => f.data.toString())).toEqual(['a b c\n'])
  })

  it('reads timestamps to the second and to the nanosecond; refuses what is not one', () => {
    expect(timestampNs('1970-01-01T00:00:01Z')).toBe(1_000_000_000n)
    expect(timestampNs('1970-01-01T00:00:01.5Z')).toBe(1_500_000_000n)
    expect(timestampNs('1970-01-01T01:00:01.000000007+01:00')).toBe(1_000_000_007n)
    expect(timestampNs('yesterday')).toBeUndefined()
    expect(sinceFor(5_500_000_000n)).toBe('4')
    expect(sinceFor(0n)).toBe('0')
  })
})

describe('docker log resume', () => {
  /** A log as the engine keeps it: frames in time order, several per timestamp (podman: seconds). */
  const logArb = fc.array(fc.record({ dt: fc.nat(2), stream: fc.constantFrom<1 | 2>(1, 2) }), { minLength: 1, maxLength: 60 })
    .map(steps => {
      let sec = 0
      return steps.map(({ dt, stream }, i): LogFrame => {
        sec += dt
        return { stream: stream === 2 ? 'stderr' : 'stdout', ts: new Date(Date.UTC(2026, 0, 1, 0, 0, sec)).toISOString().replace('.000', ''), data: Buffer.from(`line ${i}\n`) }
      })
    })

  /** What a follower writes from `frames` starting at `point`, and the point it ends on. */
  function follow (frames: LogFrame[], point: ResumePoint | undefined): { written: string[], point: ResumePoint | undefined } {
    const filter = createResumeFilter(point)
    const written = frames.filter(f => filter.accept(f)).map(f => f.data.toString())
    return { written, point: filter.point() }
  }

  it('a follower that stops after any frame and resumes (from a second earlier) writes every frame once', () => {
    fc.assert(fc.property(logArb, fc.nat(), (log, at) => {
      const cut = at % (log.length + 1)
      const first = follow(log.slice(0, cut), undefined)
      // the re-attached stream starts one second before the point (sinceFor), so it repeats some
      const sinceNs = first.point !== undefined ? BigInt(sinceFor(timestampNs(first.point.ts)!)) * 1_000_000_000n : 0n
      const replay = log.filter(f => timestampNs(f.ts)! >= sinceNs)
      const second = follow(replay, first.point)
      expect([...first.written, ...second.written]).toEqual(log.map(f => f.data.toString()))
    }))
  })

  it('a point saved one batch late (kill -9 between append and save) repeats that batch, loses nothing', () => {
    fc.assert(fc.property(logArb, fc.nat(), fc.nat(), (log, a, b) => {
      const saved = a % (log.length + 1)
      const written = saved + (b % (log.length - saved + 1))
      const upToSaved = follow(log.slice(0, saved), undefined)
      const resumed = follow(log, upToSaved.point).written
      const text = (fs: LogFrame[]): string[] => fs.map(f => f.data.toString())
      // the file: what was written before the kill, then everything past the saved point, so
      // nothing is lost and only the frames between the point and the kill appear twice
      expect(resumed).toEqual(text(log.slice(saved)))
      expect([...text(log.slice(0, written)), ...resumed].length - log.length).toBe(written - saved)
    }))
  })
})
