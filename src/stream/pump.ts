import { DmsError, HandlerFailed } from '../lib/errors.js'
import type { StreamReader, StreamWriter } from './stream.js'

/** Output read per log chunk at most: a small fraction of the window so several are in flight. */
const MAX_LOG_CHUNK_BYTES = 64 * 1024
/**
 * A chunk is at most a quarter window (StreamWriter.write), and JSON may grow text up to 6×
 * (`\u0000` for a control byte): a read of window / 32 fits once encoded, whatever the bytes.
 */
const LOG_CHUNK_WINDOW_SHARE = 32
/**
 * Reads of one follow at most (every loop is bounded): each either carries output or waits for
 * it, so this is ~10 million chunks, far past any stream a reader keeps open.
 */
const MAX_FOLLOW_ROUNDS = 10_000_000

/** What a log source answers (an allocation's `logs`, with `wait`). */
export interface LogRead { data: string, nextOffset: number, eof: boolean, ended: boolean, skipped?: number }
/** A chunk of a log stream: text, where the next one starts, and bytes rotation dropped before it. */
export interface LogStreamChunk { data: string, nextOffset: number, skipped?: number }

/**
 * Follows a log onto a stream: each chunk as soon as it is written (the source's long poll wakes
 * on the file's change notification), credit permitting, until the source ended (the stream ends
 * with `{nextOffset}`) or the stream is over (its signal stops the wait at once).
 */
export async function followLogs (w: StreamWriter, read: (o: { offset: number, maxBytes: number, signal: AbortSignal }) => Promise<LogRead>, offset: number): Promise<void> {
  const maxBytes = Math.max(1, Math.min(MAX_LOG_CHUNK_BYTES, Math.floor(w.window / LOG_CHUNK_WINDOW_SHARE)))
  try {
    for (let i = 0; i < MAX_FOLLOW_ROUNDS && w.state === 'open'; i++) {
      const chunk = await read({ offset, maxBytes, signal: w.signal })
      if (w.state !== 'open') return
      if (chunk.data !== '' || (chunk.skipped ?? 0) > 0) {
        await w.write(chunk.skipped !== undefined ? { data: chunk.data, nextOffset: chunk.nextOffset, skipped: chunk.skipped } : { data: chunk.data, nextOffset: chunk.nextOffset })
      }
      offset = chunk.nextOffset
      if (chunk.ended) { await w.end({ nextOffset: offset }); return }
    }
    w.cancel(`gave up after ${MAX_FOLLOW_ROUNDS} reads`)
  } catch (err) {
    // the stream ended under us (the reader cancelled, or went away): nothing more to say
    if (w.state !== 'open') return
    w.cancel('the log could not be read', err instanceof DmsError ? err : new HandlerFailed('the log could not be read'))
  }
}

/** Chunks a pipe carries at most (every loop is bounded): as MAX_FOLLOW_ROUNDS. */
const MAX_PIPE_CHUNKS = 10_000_000

/**
 * Carries one stream into another (a node relaying a remote stream to its own reader): credit
 * flows back through it (a chunk is read from `from` only once `to` took the previous one), and
 * the end of either is the end of both — `to` cancelled or lost cancels `from`, `from` lost or
 * cancelled cancels `to` with that error.
 */
export async function pipeStream (from: StreamReader, to: StreamWriter): Promise<void> {
  const onAbort = (): void => { from.cancel('the downstream reader is gone') }
  to.signal.addEventListener('abort', onAbort, { once: true })
  try {
    for (let i = 0; i < MAX_PIPE_CHUNKS; i++) {
      const n = await from.next()
      if (n.done === true) { if (to.state === 'open') await to.end(from.endInfo); return }
      await to.write(n.value)
    }
    from.cancel(`gave up after ${MAX_PIPE_CHUNKS} chunks`)
    to.cancel(`gave up after ${MAX_PIPE_CHUNKS} chunks`)
  } catch (err) {
    if (to.state === 'open') to.cancel('the upstream stream failed', err instanceof DmsError ? err : new HandlerFailed('the upstream stream failed'))
    else from.cancel('the downstream reader is gone')
  } finally {
    to.signal.removeEventListener('abort', onAbort)
  }
}
