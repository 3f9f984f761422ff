import { appendFile, readFile, writeFile } from 'node:fs/promises'
import { setTimeout as delay } from 'node:timers/promises'
import type { Logger } from '../../../lib/log.js'
import { LOG_REATTACH_ATTEMPTS, LOG_REATTACH_DELAY_MS } from './constants.js'

/**
 * Follows a container's log stream into the allocation's stdout/stderr files.
 *
 * The engine keeps the container's whole output (podman's k8s-file, Docker's json-file), so the
 * follower can always attach late, and re-attach after the daemon was killed: it asks for the
 * log with timestamps from a little before its resume point, drops every frame stamped before
 * it and as many frames stamped exactly at it as it had already written. The resume point (the
 * last written frame's timestamp and the count of frames written with that timestamp) is saved
 * in the allocation's directory after each batch is appended, so a `kill -9` between the append
 * and the save repeats at most that one batch, and loses nothing. Podman stamps frames to the
 * second only; the count makes the scheme exact at any precision, as long as the engine returns
 * frames in time order, which both do (one log file per container, appended in order).
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
  /** Opens the engine's log stream: follow, stdout and stderr, timestamps, from `since`. */
  open: (since: string | undefined) => Promise<NodeJS.ReadableStream>
  log: Logger
}

export interface LogFollower {
  /** Resolves when the stream ended (the container exited) or the follower gave up or was closed. Never rejects. */
  readonly done: Promise<void>
  /** Stops following; what was written stays, with its resume point. */
  close: () => void
}

async function readPoint (path: string, id: string, log: Logger): Promise<ResumePoint | undefined> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  try {
    const v = JSON.parse(text) as Partial<ResumePoint> & { id?: unknown }
    if (v.id !== id) return undefined
    if (typeof v.ts === 'string' && timestampNs(v.ts) !== undefined && Number.isInteger(v.n) && (v.n ?? 0) > 0) return { ts: v.ts, n: v.n ?? 0 }
  } catch {}
  // An unreadable point (never written whole by us) means the output is written again from the
  // start: duplicated, which is the lesser harm than lost.
  log.warn({ path }, 'docker log resume point unreadable: following the log from its start')
  return undefined
}

export function createLogFollower (init: LogFollowerInit): LogFollower {
  const { log } = init
  let closed = false
  let current: NodeJS.ReadableStream | undefined

  const run = async (): Promise<void> => {
    let point = await readPoint(init.statePath, init.id, log)
    let failures = 0
    while (!closed) {
      const filter = createResumeFilter(point)
      const parser = createFrameParser({ timestamps: true })
      try {
        const pointNs = point !== undefined ? timestampNs(point.ts) : undefined
        const stream = await init.open(pointNs !== undefined ? sinceFor(pointNs) : undefined)
        current = stream
        if (closed) { destroy(stream); return }
        for await (const chunk of stream) {
          const out: Buffer[] = []
          const err: Buffer[] = []
          for (const frame of parser.push(chunk as Buffer)) {
            if (filter.accept(frame)) (frame.stream === 'stderr' ? err : out).push(frame.data)
          }
          if (out.length > 0) await appendFile(init.stdoutPath, Buffer.concat(out))
          if (err.length > 0) await appendFile(init.stderrPath, Buffer.concat(err))
          const next = filter.point()
          if (next !== undefined && (out.length > 0 || err.length > 0)) {
            point = next
            await writeFile(init.statePath, JSON.stringify({ id: init.id, ...point }))
          }
          failures = 0
        }
        return // the engine ended the stream: the container exited and all of its output is written
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

function destroy (stream: NodeJS.ReadableStream): void {
  const s = stream as NodeJS.ReadableStream & { destroy?: () => void }
  s.destroy?.()
}
