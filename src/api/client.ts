import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import type { RelayReply } from '../actor/system.js'
import type { Handle } from '../actor/types.js'
import { NotRunning, Timeout, errorFromWire, type WireError } from '../lib/errors.js'

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
