import { constants as fsConstants } from 'node:fs'
import { appendFile, open, readFile, stat, truncate, type FileHandle } from 'node:fs/promises'
import { setTimeout as delay } from 'node:timers/promises'
import type { Logger } from '../../../lib/log.js'
import { LOG_REATTACH_ATTEMPTS, LOG_REATTACH_DELAY_MS, LOG_STATE_RECORD_BYTES, MAX_RECONCILE_BYTES, MAX_UNSAVED_BYTES } from './constants.js'

/**
 * Follows a container's log stream into the allocation's stdout/stderr files.
 *
 * The engine keeps the container's whole output (podman's k8s-file, Docker's json-file), so the
 * follower can always attach late, and re-attach after the daemon was killed: it asks for the
 * log with timestamps from a little before its resume point, drops every frame stamped before
 * it and as many frames stamped exactly at it as it had already written. The resume point (the
 * last written frame's timestamp, the count of frames written with that timestamp, and the sizes
 * of the two files after that frame) is saved in the allocation's directory after each batch is
 * appended. Podman stamps frames to the second only; the count makes the scheme exact at any
 * precision, as long as the engine returns frames in time order, which both do (one log file per
 * container, appended in order).
 *
 * A `kill -9` between a batch's append and the save of its point leaves that batch in the files
 * past the saved sizes. On resume the follower reads those bytes back and skips replayed output
 * only as far as it is byte for byte what the files already hold there; at the first difference
 * (a file rotated or written by someone else meanwhile) it writes everything again. So nothing is
 * lost in any case, and nothing is written twice unless the files were changed under it.
 */
export type LogStream = 'stdout' | 'stderr'

export interface LogFrame {
  stream: LogStream
  /** The engine's timestamp as sent (RFC 3339, to the second or the nanosecond). */
  ts: string
  data: Buffer
}

/** Header of one multiplexed frame: stream type (1 stdout, 2 stderr), 3 zero bytes, uint32 size. */
const HEADER_BYTES = 8

/**
 * Splits the engine's multiplexed stream (`Tty: false`) into frames. Chunks may cut frames
 * anywhere; the parser keeps the remainder. With `timestamps=1` each frame's payload starts with
 * the timestamp and a space.
 */
export function createFrameParser (opts: { timestamps: boolean }): { push: (chunk: Buffer) => LogFrame[] } {
  let pending: Buffer = Buffer.alloc(0)
  return {
    push (chunk: Buffer): LogFrame[] {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
      const frames: LogFrame[] = []
      let at = 0
      while (pending.length - at >= HEADER_BYTES) {
        const size = pending.readUInt32BE(at + 4)
        if (pending.length - at - HEADER_BYTES < size) break
        const type = pending[at]
        const payload = pending.subarray(at + HEADER_BYTES, at + HEADER_BYTES + size)
        at += HEADER_BYTES + size
        const space = opts.timestamps ? payload.indexOf(0x20) : -1
        const ts = space > 0 ? payload.subarray(0, space).toString('latin1') : ''
        // `Buffer.from` copies: the frame must not keep the whole chunk alive
        const data = Buffer.from(space > 0 ? payload.subarray(space + 1) : payload)
        frames.push({ stream: type === 2 ? 'stderr' : 'stdout', ts, data })
      }
      pending = at === pending.length ? Buffer.alloc(0) : Buffer.from(pending.subarray(at))
      return frames
    }
  }
}

const TS = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/

/** Nanoseconds since the epoch of an RFC 3339 timestamp; undefined when it is not one. */
export function timestampNs (ts: string): bigint | undefined {
  const m = TS.exec(ts)
  if (m === null) return undefined
  const ms = Date.parse(`${m[1]}${m[3]}`)
  if (!Number.isFinite(ms)) return undefined
  return BigInt(ms) * 1_000_000n + BigInt((m[2] ?? '').padEnd(9, '0'))
}

/** The `since` query value for a resume point: one second before it, in whole seconds. */
export function sinceFor (ns: bigint): string {
  const s = ns / 1_000_000_000n - 1n
  return String(s < 0n ? 0n : s)
}

export interface ResumePoint {
  /** Timestamp of the last frame written. */
  ts: string
  /** How many frames stamped exactly `ts` were written. */
  n: number
}

/**
 * What the follower saves: for which container, the point (none before the first frame), and the
 * files' sizes after it (before the first frame: when the follower first attached).
 */
interface SavedState { id: string, point?: ResumePoint, out: number, err: number }

/**
 * Decides, frame by frame, what is new past a resume point; tracks the point as frames are
 * written. One per attachment of the stream (the count of frames at the resume timestamp starts
 * over with each attachment).
 */
export function createResumeFilter (start: ResumePoint | undefined): { accept: (frame: LogFrame) => boolean, point: () => ResumePoint | undefined } {
  let last = start
  let lastNs = start !== undefined ? timestampNs(start.ts) : undefined
  let seenAtLast = 0
  return {
    accept (frame: LogFrame): boolean {
      const ns = timestampNs(frame.ts)
      // a frame without a readable timestamp cannot be placed: write it rather than lose it
      if (ns === undefined) return true
      if (last === undefined || lastNs === undefined || ns > lastNs) {
        last = { ts: frame.ts, n: 1 }
        lastNs = ns
        seenAtLast = 1
        return true
      }
      if (ns < lastNs) return false
      seenAtLast++
      if (seenAtLast <= last.n) return false
      last = { ts: last.ts, n: last.n + 1 }
      return true
    },
    point: () => last
  }
}

export interface LogFollowerInit {
  /** The container's id: a resume point saved for another container (an earlier run) is not used. */
  id: string
  stdoutPath: string
  stderrPath: string
  /** Where the resume point is kept (in the allocation's directory). */
  statePath: string
  /** Opens the engine's log stream: stdout and stderr, timestamps, from `since`; following or not. */
  open: (since: string | undefined, follow: boolean) => Promise<NodeJS.ReadableStream | Buffer>
  log: Logger
}

export interface LogFollower {
  /** Resolves when the stream ended (the container exited) or the follower gave up or was closed. Never rejects. */
  readonly done: Promise<void>
  /** Stops following; what was written stays, with its resume point. */
  close: () => void
}

async function readState (path: string, id: string, log: Logger): Promise<SavedState | undefined> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  try {
    const v = JSON.parse(text) as { id?: unknown, point?: Partial<ResumePoint>, out?: unknown, err?: unknown }
    if (v.id !== id) return undefined
    const size = (x: unknown): number | undefined => Number.isSafeInteger(x) && (x as number) >= 0 ? x as number : undefined
    const out = size(v.out)
    const err = size(v.err)
    const p = v.point
    const pointOk = p === undefined || (typeof p.ts === 'string' && timestampNs(p.ts) !== undefined && Number.isInteger(p.n) && (p.n ?? 0) > 0)
    if (out !== undefined && err !== undefined && pointOk) {
      return { id, point: p !== undefined ? { ts: p.ts ?? '', n: p.n ?? 0 } : undefined, out, err }
    }
  } catch {}
  // An unreadable point (never written whole by us) means the output is written again from the
  // start: duplicated, which is the lesser harm than lost.
  log.warn({ path }, 'docker log resume point unreadable: following the log from its start')
  return undefined
}

/**
 * Saves the state in one write at offset 0, padded to a fixed size, never truncating: a `kill -9`
 * cannot leave half a state (`writeFile` truncates first, then writes: a kill between the two
 * leaves an empty file, and the next follower would write the whole log again).
 */
async function saveState (fh: FileHandle, state: SavedState): Promise<void> {
  const record = Buffer.alloc(LOG_STATE_RECORD_BYTES, 0x20)
  const json = Buffer.from(JSON.stringify(state))
  if (json.length >= record.length) throw new Error(`docker log state of ${json.length} bytes does not fit its record`)
  json.copy(record)
  record[record.length - 1] = 0x0a
  await fh.write(record, 0, record.length, 0)
}

async function sizeOf (path: string): Promise<number> {
  try {
    return (await stat(path)).size
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0
    throw err
  }
}

/** The bytes of `path` from `from` to its end: what a batch appended before its point was saved. */
async function tailFrom (path: string, from: number, size: number): Promise<Buffer> {
  if (from >= size || size - from > MAX_UNSAVED_BYTES) return Buffer.alloc(0)
  return await readRange(path, from, size)
}

async function readRange (path: string, from: number, size: number): Promise<Buffer> {
  if (from >= size) return Buffer.alloc(0)
  const fh = await open(path, 'r')
  try {
    const buf = Buffer.alloc(size - from)
    const { bytesRead } = await fh.read(buf, 0, buf.length, from)
    return buf.subarray(0, bytesRead)
  } finally {
    await fh.close()
  }
}

/**
 * Skips replayed output as long as it is, byte for byte, what a file already holds past the
 * saved point; after the first difference it lets everything through.
 */
function createDedupe (already: Buffer): (data: Buffer) => Buffer {
  let rest = already
  return data => {
    if (rest.length === 0) return data
    const k = Math.min(rest.length, data.length)
    if (!data.subarray(0, k).equals(rest.subarray(0, k))) {
      rest = Buffer.alloc(0)
      return data
    }
    rest = rest.subarray(k)
    return data.subarray(k)
  }
}

export function createLogFollower (init: LogFollowerInit): LogFollower {
  const { log } = init
  let closed = false
  let current: NodeJS.ReadableStream | undefined

  const run = async (): Promise<void> => {
    const saved = await readState(init.statePath, init.id, log)
    const sizes = { out: await sizeOf(init.stdoutPath), err: await sizeOf(init.stderrPath) }
    // read-write, created, never truncated nor appended to (O_APPEND would ignore the offset)
    const stateFile = await open(init.statePath, fsConstants.O_RDWR | fsConstants.O_CREAT, 0o644)
    try {
      // the files' sizes before the first frame, so that even a first batch appended just before
      // a crash is recognised; a state of another container (an earlier run) is dropped first,
      // before anything of this one is written
      if (saved === undefined) {
        await stateFile.truncate(0)
        await saveState(stateFile, { id: init.id, ...sizes })
      }
      await follow(saved, sizes, stateFile)
    } finally {
      await stateFile.close()
    }
  }

  const follow = async (saved: SavedState | undefined, sizes: { out: number, err: number }, stateFile: FileHandle): Promise<void> => {
    let point: ResumePoint | undefined = saved?.point
    // what a crash left in the files past the saved point, and where this attachment starts
    const tails = {
      out: saved !== undefined ? await tailFrom(init.stdoutPath, saved.out, sizes.out) : Buffer.alloc(0),
      err: saved !== undefined ? await tailFrom(init.stderrPath, saved.err, sizes.err) : Buffer.alloc(0)
    }
    const attach = { out: sizes.out, err: sizes.err }
    const dedupe = { out: createDedupe(tails.out), err: createDedupe(tails.err) }

    /**
     * Once the container exited: reads the engine's log again from where this attachment
     * started (not following) and makes what the attachment appended exactly what it should have
     * appended from that read. Podman's followed stream is not to be trusted at its end: it may
     * stop before the last lines of a burst (seen: 450 of 3,000 missing), or send a few lines out
     * of their place just before it ends (seen: lines 1799, 1818, 2452 after 1567), while a plain
     * read of the same log is right. So what the stream appended past the first byte that differs
     * is cut off and written again; nothing in the files from before the attachment is touched.
     * False when the output since the attachment is too large to hold, or a file was rotated or
     * written by another since the attachment (then the lines never sent are still read).
     */
    const reconcile = async (): Promise<boolean> => {
      const startNs = saved?.point !== undefined ? timestampNs(saved.point.ts) : undefined
      const read = await init.open(startNs !== undefined ? sinceFor(startNs) : undefined, false)
      const whole = Buffer.isBuffer(read) ? read : await collect(read)
      const filter = createResumeFilter(saved?.point)
      const skip = { out: createDedupe(tails.out), err: createDedupe(tails.err) }
      const want = { out: [] as Buffer[], err: [] as Buffer[] }
      for (const frame of createFrameParser({ timestamps: true }).push(whole)) {
        if (!filter.accept(frame)) continue
        const key = frame.stream === 'stderr' ? 'err' : 'out'
        want[key].push(skip[key](frame.data))
      }
      const plan: Array<{ path: string, from: number, have: Buffer, want: Buffer, key: 'out' | 'err' }> = []
      for (const [key, path] of [['out', init.stdoutPath], ['err', init.stderrPath]] as const) {
        const size = await sizeOf(path)
        const w = Buffer.concat(want[key])
        // a size other than what this attachment made it: the file was rotated or written by
        // someone else meanwhile, and its bytes are no longer where the follower put them
        if (size !== sizes[key] || size - attach[key] > MAX_RECONCILE_BYTES || w.length > MAX_RECONCILE_BYTES) return false
        plan.push({ path, from: attach[key], have: await readRange(path, attach[key], size), want: w, key })
      }
      for (const { path, from, have, want: w, key } of plan) {
        let d = 0
        const n = Math.min(have.length, w.length)
        while (d < n && have[d] === w[d]) d++
        if (d < have.length) {
          log.warn({ path, offset: from + d, dropped: have.length - d }, 'the engine\'s log stream differed from its log: rewriting the end of the file')
          await truncate(path, from + d)
        }
        if (d < w.length) await appendFile(path, w.subarray(d))
        sizes[key] = from + w.length
      }
      const p = filter.point()
      if (p !== undefined) {
        point = p
        await saveState(stateFile, { id: init.id, point, out: sizes.out, err: sizes.err })
      }
      return true
    }

    let failures = 0
    // When reconcile cannot run: one more read, not following, from the resume point, which
    // at least brings the lines the followed stream never sent.
    let final = false
    while (!closed) {
      const filter = createResumeFilter(point)
      const parser = createFrameParser({ timestamps: true })
      try {
        const pointNs = point !== undefined ? timestampNs(point.ts) : undefined
        const stream = await init.open(pointNs !== undefined ? sinceFor(pointNs) : undefined, !final)
        // a read that does not follow comes whole
        const chunks = Buffer.isBuffer(stream) ? [stream] : stream
        if (!Buffer.isBuffer(stream)) current = stream
        if (closed) { if (!Buffer.isBuffer(stream)) destroy(stream); return }
        for await (const chunk of chunks) {
          const out: Buffer[] = []
          const err: Buffer[] = []
          let accepted = false
          for (const frame of parser.push(chunk as Buffer)) {
            if (!filter.accept(frame)) continue
            accepted = true
            if (frame.stream === 'stderr') err.push(dedupe.err(frame.data))
            else out.push(dedupe.out(frame.data))
          }
          const outData = Buffer.concat(out)
          const errData = Buffer.concat(err)
          if (outData.length > 0) await appendFile(init.stdoutPath, outData)
          if (errData.length > 0) await appendFile(init.stderrPath, errData)
          sizes.out += outData.length
          sizes.err += errData.length
          const next = filter.point()
          if (next !== undefined && accepted) {
            point = next
            await saveState(stateFile, { id: init.id, point, out: sizes.out, err: sizes.err })
          }
          failures = 0
        }
        if (final) return
        if (closed) return
        if (await reconcile()) return // all of the container's output is written, as the engine keeps it
        final = true
        continue
      } catch (err) {
        if (closed) return
        // `point` is the last one saved, which is what is in the files: resume from there
        failures++
        if (failures > LOG_REATTACH_ATTEMPTS) {
          log.warn({ err, path: init.stdoutPath }, 'docker log stream lost; giving up after repeated attempts')
          return
        }
        log.debug({ err, failures }, 'docker log stream broke; re-attaching')
        await delay(LOG_REATTACH_DELAY_MS)
      } finally {
        current = undefined
      }
    }
  }

  const done = run().catch(err => { log.warn({ err, path: init.stdoutPath }, 'docker log follower failed') })
  return {
    done,
    close () {
      closed = true
      if (current !== undefined) destroy(current)
    }
  }
}

async function collect (stream: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const chunk of stream) parts.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk))
  return Buffer.concat(parts)
}

function destroy (stream: NodeJS.ReadableStream): void {
  const s = stream as NodeJS.ReadableStream & { destroy?: () => void }
  s.destroy?.()
}
