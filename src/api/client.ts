import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import type { RelayReply } from '../actor/system.js'
import type { Handle } from '../actor/types.js'
import { NotRunning, StreamLost, Timeout, errorFromWire, type WireError } from '../lib/errors.js'

/** Network reads of one stream at most (every loop is bounded): a chunk or more each, ~10 million. */
const MAX_STREAM_READS = 10_000_000

/** `<data-dir>/daemon.json`, written by a daemon once it is ready. */
export const DaemonInfo = z.object({
  peerId: z.string(),
  did: z.string(),
  addrs: z.array(z.string()),
  api: z.string(),
  pid: z.number()
})
export type DaemonInfo = z.infer<typeof DaemonInfo>

export async function readDaemonInfo (dataDir: string): Promise<DaemonInfo> {
  const path = join(dataDir, 'daemon.json')
  let text: string
  try { text = await readFile(path, 'utf8') } catch {
    throw new NotRunning(`no daemon is running for ${dataDir} (no daemon.json); start one with 'dms run --data-dir ${dataDir}'`, { dataDir })
  }
  const info = DaemonInfo.parse(JSON.parse(text))
  try { process.kill(info.pid, 0) } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') throw new NotRunning(`the daemon of ${dataDir} (pid ${info.pid}) is not running; start it with 'dms run'`, { dataDir })
  }
  return info
}

/** Talks to a daemon's local API. */
export class ApiClient {
  constructor (readonly url: string) {}

  async handle (): Promise<Handle> {
    return await this.request<Handle>('GET', '/api/v1/actor/handle', undefined, 10_000)
  }

  async invoke (frame: Uint8Array, timeoutMs: number): Promise<RelayReply> {
    return await this.request<RelayReply>('POST', '/api/v1/actor/invoke', frame, timeoutMs)
  }

  async send (frame: Uint8Array, timeoutMs: number): Promise<void> {
    await this.request('POST', '/api/v1/actor/send', frame, timeoutMs)
  }

  async broadcast (frame: Uint8Array, timeoutMs: number): Promise<void> {
    await this.request('POST', '/api/v1/actor/broadcast', frame, timeoutMs)
  }

  /**
   * Opens a stream through the daemon (`frame`: a signed invoke of a behaviour that accepts one)
   * and yields its chunks as they arrive; returns the writer's end info. Throws the open's
   * refusal, or the stream's typed error (StreamLost, StreamClosed, …). `timeoutMs` bounds the
   * open only: a stream lasts as long as both ends live. Leaving the loop early closes the
   * connection, which cancels the stream on the writer's node.
   */
  async * stream (frame: Uint8Array, timeoutMs: number): AsyncGenerator<unknown, unknown> {
    const ac = new AbortController()
    const timer = setTimeout(() => { ac.abort(new Timeout(`the daemon at ${this.url} did not open the stream within ${timeoutMs} ms`)) }, timeoutMs + 2_000)
    let res: Response
    try {
      res = await fetch(this.url + '/api/v1/actor/stream', {
        method: 'POST',
        body: Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength),
        headers: { 'content-type': 'application/octet-stream' },
        signal: ac.signal
      })
    } catch (err) {
      clearTimeout(timer)
      if (ac.signal.aborted) throw ac.signal.reason as Error
      throw new NotRunning(`cannot reach the daemon API at ${this.url}: ${((err as Error).cause as Error | undefined)?.message ?? (err as Error).message}`)
    }
    clearTimeout(timer)
    if (!res.ok || res.body === null) {
      const json = await res.json().catch(() => ({})) as { error?: WireError }
      throw errorFromWire(json.error ?? { name: 'HandlerFailed', message: `HTTP ${res.status}` })
    }
    const reader = res.body.getReader()
    const decoder = new TextDecoder()
    let buf = ''
    try {
      // one read per network chunk; the stream ends with an {end} or {error} line, or the daemon went away
      for (let i = 0; i < MAX_STREAM_READS; i++) {
        let r: Awaited<ReturnType<typeof reader.read>>
        try { r = await reader.read() } catch (err) {
          throw new StreamLost(`the daemon at ${this.url} closed the stream: ${(err as Error).message}`, { side: 'writer', reason: 'daemon-gone' })
        }
        if (r.done) throw new StreamLost(`the daemon at ${this.url} ended the stream without an end`, { side: 'writer', reason: 'daemon-gone' })
        buf += decoder.decode(r.value, { stream: true })
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const line = JSON.parse(buf.slice(0, nl)) as { chunk?: unknown, end?: unknown, error?: WireError }
          buf = buf.slice(nl + 1)
          if (line.error !== undefined) throw errorFromWire(line.error)
          if ('end' in line) return line.end
          yield line.chunk
        }
      }
      throw new StreamLost(`gave up after ${MAX_STREAM_READS} reads`, { side: 'reader', reason: 'bound' })
    } finally {
      ac.abort()
    }
  }

  private async request<T>(method: string, path: string, body: Uint8Array | undefined, timeoutMs: number): Promise<T> {
    let res: Response
    try {
      res = await fetch(this.url + path, {
        method,
        body: body === undefined ? undefined : Buffer.from(body.buffer, body.byteOffset, body.byteLength),
        headers: body === undefined ? undefined : { 'content-type': 'application/octet-stream' },
        // the daemon answers at the envelope's deadline; allow a little beyond for the HTTP leg
        signal: AbortSignal.timeout(timeoutMs + 2_000)
      })
    } catch (err) {
      if ((err as Error).name === 'TimeoutError') throw new Timeout(`the daemon at ${this.url} did not answer within ${timeoutMs} ms`)
      throw new NotRunning(`cannot reach the daemon API at ${this.url}: ${((err as Error).cause as Error | undefined)?.message ?? (err as Error).message}`)
    }
    const json = await res.json() as { error?: WireError }
    if (!res.ok || json.error !== undefined) throw errorFromWire(json.error ?? { name: 'HandlerFailed', message: `HTTP ${res.status}` })
    return json as T
  }
}
