import { appendFile, mkdtemp, readFile, rm, truncate } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { silentLogger } from '../../../src/lib/log.js'
import { createFrameParser, createLogFollower, createResumeFilter, sinceFor, timestampNs, type LogFrame, type ResumePoint } from '../../../src/services/executors/docker/logs.js'

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

describe('docker log follower on real files', () => {
  let root: string
  let seq = 0
  beforeAll(async () => { root = await mkdtemp(join(tmpdir(), 'dms-docker-logs-')) })
  afterAll(async () => { await rm(root, { recursive: true, force: true }) })

  /** Frames in time order, several per second (as podman stamps them), on both streams. */
  const frames = (count: number): LogFrame[] => Array.from({ length: count }, (_, i) => ({
    stream: i % 3 === 2 ? 'stderr' : 'stdout',
    ts: new Date(Date.UTC(2026, 0, 1, 0, 0, Math.floor(i / 4))).toISOString().replace('.000', ''),
    data: Buffer.from(`${i % 3 === 2 ? 'err' : 'out'} ${i}\n`)
  }))
  const wire = (fs: LogFrame[]): Buffer => Buffer.concat(fs.map(f => frame(f.stream === 'stderr' ? 2 : 1, `${f.ts} ${f.data.toString()}`)))
  const text = (fs: LogFrame[], stream: 'stdout' | 'stderr'): string => fs.filter(f => f.stream === stream).map(f => f.data.toString()).join('')

  /** An engine that holds `log` and answers a read from `since` (whole seconds), in `chunk`-frame pieces. */
  function engine (log: LogFrame[], chunk = 5): (since: string | undefined) => Promise<Buffer> {
    return async since => {
      const from = since === undefined ? 0n : BigInt(since) * 1_000_000_000n
      return wire(log.filter(f => timestampNs(f.ts)! >= from).slice(0, chunk * 1000))
    }
  }

  /** Follows `log` to its end; `followed` is what the followed stream sends, if not the log itself. */
  async function follow (dir: string, log: LogFrame[], followed?: LogFrame[]): Promise<void> {
    const read = engine(log)
    const stream = engine(followed ?? log)
    const f = createLogFollower({
      id: 'c1', stdoutPath: join(dir, 'out'), stderrPath: join(dir, 'err'), statePath: join(dir, 'state.json'),
      open: async (since, following) => await (following ? stream : read)(since), log: silentLogger()
    })
    await f.done
  }

  const newDir = async (): Promise<string> => await mkdtemp(join(root, `f${++seq}-`))
  const read = async (dir: string, name: string): Promise<string> => await readFile(join(dir, name), 'utf8').catch(() => '')

  it('a daemon killed between appending a batch and saving its point: the next one writes the rest, nothing twice', async () => {
    const log = frames(60)
    await fc.assert(fc.asyncProperty(fc.nat(60), fc.nat(60), async (a0, b0) => {
      const [a, b] = a0 <= b0 ? [a0, b0] : [b0, a0]
      const dir = await newDir()
      await follow(dir, log.slice(0, a)) // written, point saved
      // the killed daemon's last batch: appended, its point never saved
      const lost = log.slice(a, b)
      if (text(lost, 'stdout') !== '') await appendFile(join(dir, 'out'), text(lost, 'stdout'))
      if (text(lost, 'stderr') !== '') await appendFile(join(dir, 'err'), text(lost, 'stderr'))
      await follow(dir, log)
      expect(await read(dir, 'out')).toBe(text(log, 'stdout'))
      expect(await read(dir, 'err')).toBe(text(log, 'stderr'))
    }), { numRuns: 40 })
  })

  it('a followed stream that garbles its end (podman at exit) is corrected from the engine\'s log', async () => {
    const log = frames(60)
    // lines out of their place just before the end, and the last ones never sent
    const garbled = [...log.slice(0, 40), log[52], log[45], log[58], ...log.slice(43, 50)]
    const fresh = await newDir()
    await follow(fresh, log, garbled)
    expect(await read(fresh, 'out')).toBe(text(log, 'stdout'))
    expect(await read(fresh, 'err')).toBe(text(log, 'stderr'))
    // the same after a restart: the attachment starts at the saved point
    const resumed = await newDir()
    await follow(resumed, log.slice(0, 20))
    await follow(resumed, log, [...log.slice(0, 40), log[52], log[45]])
    expect(await read(resumed, 'out')).toBe(text(log, 'stdout'))
    expect(await read(resumed, 'err')).toBe(text(log, 'stderr'))
  })

  it('a file rotated while it follows is not "corrected" at the end: nothing the rotation kept is cut', async () => {
    const log = frames(60)
    const dir = await newDir()
    let rotated = false
    const f = createLogFollower({
      id: 'c1', stdoutPath: join(dir, 'out'), stderrPath: join(dir, 'err'), statePath: join(dir, 'state.json'),
      open: async (since, following) => {
        if (!following) return await engine(log)(since)
        // the supervisor rotates (copy-truncate) while the stream runs, then more comes
        const first = await engine(log.slice(0, 30))(since)
        return (async function * () {
          yield first
          await appendFile(join(dir, 'out.1'), await readFile(join(dir, 'out')))
          await truncate(join(dir, 'out'), 0)
          rotated = true
          yield wire(log.slice(30))
        })() as unknown as NodeJS.ReadableStream
      },
      log: silentLogger()
    })
    await f.done
    expect(rotated).toBe(true)
    expect(await read(dir, 'out.1') + await read(dir, 'out')).toBe(text(log, 'stdout'))
  })

  it('a file changed under it (rotated, or written by another) is never a reason to drop output', async () => {
    const log = frames(40)
    const rotated = await newDir()
    await follow(rotated, log.slice(0, 20))
    await truncate(join(rotated, 'out'), 0) // copy-truncate rotation
    await follow(rotated, log)
    expect(await read(rotated, 'out')).toBe(text(log.slice(20), 'stdout'))

    const foreign = await newDir()
    await follow(foreign, log.slice(0, 20))
    await appendFile(join(foreign, 'out'), 'someone else\n')
    await follow(foreign, log)
    expect(await read(foreign, 'out')).toBe(text(log.slice(0, 20), 'stdout') + 'someone else\n' + text(log.slice(20), 'stdout'))
  })
})
