import { watch, type FSWatcher } from 'node:fs'
import { copyFile, open, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { InvalidArgument } from '../../lib/errors.js'
import { createSerial, type Serial } from '../serial.js'
import { LOG_POLL_FALLBACK_MS, MAX_LOG_READ_BYTES } from './constants.js'

/**
 * The two log files of an allocation (`stdout.log`, `stderr.log` in its directory), written by
 * the workload itself through a file descriptor opened with O_APPEND (the process executor) or by
 * the docker executor following the container's log stream (also O_APPEND), never through a pipe
 * held by the daemon.
 *
 * **Offsets** are bytes ever written to a stream, so they stay valid across rotations: the
 * current file starts at offset `base`; rotated files keep `[start, end)` ranges. A read from an
 * offset that was rotated away answers from the oldest byte still kept and says how many bytes
 * were skipped.
 *
 * **Rotation** is copy-then-truncate: the writer's descriptor cannot be re-opened from here, and
 * with O_APPEND it writes at the new end after the truncate. Bytes written in the instant
 * between the last copy and the truncate are lost (the copy is repeated until the size holds
 * still, so that instant is short); a crash between the bookkeeping and the truncate can shift
 * later offsets once. The size cap is checked periodically, so a file may overshoot it by what
 * is written in one period.
 */
export type LogStream = 'stdout' | 'stderr'
export const LOG_STREAMS: readonly LogStream[] = ['stdout', 'stderr']

export interface LogChunk {
  /** UTF-8 text; a character cut by `maxBytes` is left for the next read (nextOffset says so). */
  data: string
  /** Where the next read continues. */
  nextOffset: number
  /** Nothing more is written yet (a long poll may wait for more). */
  eof: boolean
  /** Bytes between the offset asked for and the first one returned that rotation dropped. */
  skipped?: number
}

export interface LogFilesInit {
  dir: string
  /** Rotate a stream past this size. */
  maxBytes: number
  /** Rotated files kept per stream. */
  keep: number
}

const MetaSchema = z.object({
  /** Offset of the current file's first byte. */
  base: z.number().int().nonnegative(),
  /** Rotated files, newest first: `<stream>.log.1` holds generations[0]. */
  generations: z.array(z.object({ start: z.number().int().nonnegative(), end: z.number().int().nonnegative() }))
})
type Meta = z.infer<typeof MetaSchema>

/** Copies of a growing file before the truncate: bounded, the writer may never pause. */
const MAX_COPY_ROUNDS = 4

export class LogFiles {
  readonly dir: string
  private readonly maxBytes: number
  private readonly keep: number
  private readonly serials: Record<LogStream, Serial> = { stdout: createSerial(), stderr: createSerial() }

  constructor (init: LogFilesInit) {
    this.dir = init.dir
    this.maxBytes = init.maxBytes
    this.keep = init.keep
  }

  path (stream: LogStream): string {
    return join(this.dir, `${stream}.log`)
  }

  private metaPath (stream: LogStream): string {
    return join(this.dir, `${stream}.log.meta.json`)
  }

  private async meta (stream: LogStream): Promise<Meta> {
    try {
      return MetaSchema.parse(JSON.parse(await readFile(this.metaPath(stream), 'utf8')))
    } catch {
      return { base: 0, generations: [] }
    }
  }

  private async writeMeta (stream: LogStream, meta: Meta): Promise<void> {
    const p = this.metaPath(stream)
    await writeFile(`${p}.tmp`, JSON.stringify(meta))
    await rename(`${p}.tmp`, p)
  }

  /** Bytes ever written to the stream. */
  async written (stream: LogStream): Promise<number> {
    return await this.serials[stream](async () => (await this.meta(stream)).base + await sizeOf(this.path(stream)))
  }

  /** Rotates each stream that reached maxBytes; returns the streams rotated. */
  async rotateIfNeeded (): Promise<LogStream[]> {
    const rotated: LogStream[] = []
    for (const s of LOG_STREAMS) if (await this.serials[s](async () => await this.rotate(s))) rotated.push(s)
    return rotated
  }

  private async rotate (stream: LogStream): Promise<boolean> {
    const current = this.path(stream)
    if (await sizeOf(current) < this.maxBytes) return false
    const meta = await this.meta(stream)
    const tmp = `${current}.rotating`
    // Copy until the size holds still between two looks (bounded), then truncate at once.
    let copied = 0
    for (let round = 0; round < MAX_COPY_ROUNDS; round++) {
      const size = await sizeOf(current)
      if (size === copied && round > 0) break
      if (this.keep > 0) await copyFile(current, tmp)
      copied = this.keep > 0 ? await sizeOf(tmp) : size
    }
    const gen = { start: meta.base, end: meta.base + copied }
    if (this.keep > 0) {
      await rm(`${current}.${this.keep}`, { force: true })
      for (let i = this.keep - 1; i >= 1; i--) await rename(`${current}.${i}`, `${current}.${i + 1}`).catch(() => {})
      await rename(tmp, `${current}.1`)
    }
    await this.writeMeta(stream, { base: gen.end, generations: this.keep > 0 ? [gen, ...meta.generations].slice(0, this.keep) : [] })
    await truncate(current, 0)
    return true
  }

  /** Up to `maxBytes` from `offset` (bytes ever written) of one stream. */
  async read (o: { stream: LogStream, offset: number, maxBytes: number }): Promise<LogChunk> {
    if (!Number.isSafeInteger(o.offset) || o.offset < 0) throw new InvalidArgument(`offset must be a non-negative integer, got ${o.offset}`, { field: 'offset' })
    if (!Number.isSafeInteger(o.maxBytes) || o.maxBytes < 1) throw new InvalidArgument(`maxBytes must be a positive integer, got ${o.maxBytes}`, { field: 'maxBytes' })
    const maxBytes = Math.min(o.maxBytes, MAX_LOG_READ_BYTES)
    return await this.serials[o.stream](async () => {
      const meta = await this.meta(o.stream)
      const current = this.path(o.stream)
      const total = meta.base + await sizeOf(current)
      let offset = Math.min(o.offset, total)
      const oldest = meta.generations.length > 0 ? meta.generations[meta.generations.length - 1].start : meta.base
      let skipped = 0
      if (offset < oldest) {
        skipped = oldest - offset
        offset = oldest
      }
      let file = current
      let from = offset - meta.base
      let until = total
      if (offset < meta.base) {
        let gi = meta.generations.findIndex(g => g.start <= offset && offset < g.end)
        if (gi < 0) {
          // In no kept file (a gap): continue at the next kept byte, the nearest later start.
          for (const [i, g] of meta.generations.entries()) if (g.start > offset && (gi < 0 || g.start < meta.generations[gi].start)) gi = i
        }
        const g = meta.generations[gi] ?? { start: meta.base, end: total }
        if (g.start > offset) { skipped += g.start - offset; offset = g.start }
        file = gi >= 0 ? `${current}.${gi + 1}` : current
        from = offset - g.start
        until = g.end
      }
      const want = Math.min(maxBytes, until - offset)
      const bytes = want > 0 ? await readRange(file, from, want) : Buffer.alloc(0)
      const whole = completeUtf8(bytes, offset + bytes.length >= total)
      const nextOffset = offset + whole.length
      return { data: whole.toString('utf8'), nextOffset, eof: nextOffset >= total, ...(skipped > 0 ? { skipped } : {}) }
    })
  }

  /**
   * Resolves true once the stream holds more than `offset` bytes, false when `signal` aborts
   * first (the caller's deadline). Woken by change notifications on the directory, re-checked at
   * least every LOG_POLL_FALLBACK_MS in case one is missed.
   */
  async waitFor (o: { stream: LogStream, offset: number, signal: AbortSignal }): Promise<boolean> {
    if (await this.written(o.stream) > o.offset) return true
    if (o.signal.aborted) return false
    return await new Promise<boolean>((resolve) => {
      let watcher: FSWatcher | undefined
      let done = false
      const finish = (v: boolean): void => {
        if (done) return
        done = true
        watcher?.close()
        clearInterval(timer)
        o.signal.removeEventListener('abort', onAbort)
        resolve(v)
      }
      const check = (): void => {
        this.written(o.stream).then(n => { if (n > o.offset) finish(true) }, () => {})
      }
      const onAbort = (): void => finish(false)
      o.signal.addEventListener('abort', onAbort, { once: true })
      const timer = setInterval(check, LOG_POLL_FALLBACK_MS)
      try {
        watcher = watch(this.dir, { persistent: false }, (_event, name) => { if (name === null || name.startsWith(o.stream)) check() })
        watcher.on('error', () => {})
      } catch { /* no notifications here: the fallback period alone */ }
      // Written between the first look and the watch: look once more.
      check()
    })
  }
}

async function sizeOf (path: string): Promise<number> {
  try { return (await stat(path)).size } catch { return 0 }
}

async function readRange (path: string, from: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r').catch(() => undefined)
  if (fh === undefined) return Buffer.alloc(0)
  try {
    const buf = Buffer.alloc(length)
    const { bytesRead } = await fh.read(buf, 0, length, from)
    return buf.subarray(0, bytesRead)
  } finally {
    await fh.close()
  }
}

/**
 * Drops an incomplete UTF-8 sequence at the end, unless the stream ends there (then the broken
 * bytes are all there will be, and decode as U+FFFD). Never more than 3 bytes, never all of it.
 */
function completeUtf8 (b: Buffer, atEnd: boolean): Buffer {
  if (atEnd || b.length === 0) return b
  for (let back = 1; back <= Math.min(3, b.length); back++) {
    const c = b[b.length - back]
    if ((c & 0xc0) === 0x80) continue // a continuation byte: look further back for the lead
    const need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1
    return need > back && b.length > back ? b.subarray(0, b.length - back) : b
  }
  return b
}
