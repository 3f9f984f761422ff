import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import type { RelayReply } from '../actor/system.js'
import type { Handle } from '../actor/types.js'
import { BadRequest, DmsError, FrameTooLarge, NotFound, Unauthorized, toWireError } from '../lib/errors.js'
import type { StreamReader } from '../stream/index.js'
import { serveObserve, type ObserveNode } from './observe.js'
import { LOGIN_REASONS } from './ui-auth.js'

/**
 * The daemon's local HTTP API, bound to 127.0.0.1 only. It relays envelopes the CLI signed with
 * the user's key and adds no authority of its own: the actor system verifies each one as it
 * would any envelope from the network.
 *
 *   GET  /api/v1/actor/handle      → the node's root handle
 *   POST /api/v1/actor/invoke      body: one envelope frame (application/octet-stream) → {from, reply}
 *   POST /api/v1/actor/send        → {}
 *   POST /api/v1/actor/broadcast   → {}
 *   POST /api/v1/actor/stream      body: an invoke envelope whose request carries `open` (a
 *                                  behaviour that accepts a stream) → NDJSON lines as the stream
 *                                  flows: {chunk}…, then {end} or {error} (specs/streams.md)
 *   GET  /metrics                  → Prometheus text format (observe.ts; no login: it holds no secrets)
 *   GET  /api/v1/events?since=N    → the event stream: JSON, or Server-Sent Events to follow (observe.ts; session cookie)
 *   GET  /, /ui/…                  → the dashboard's static files (dashboard.ts; public)
 *   GET  /?token=…                 → trades a one-time login token (dms ui) for a session cookie, redirects to /
 *   GET  /api/v1/ui/…              → the dashboard's read-only data (dashboard.ts; session cookie)
 * Errors: HTTP 4xx/5xx with {error: {name, code, message, ...}}.
 *
 * Loopback is not a boundary against browsers: any page the operator opens can send requests to
 * 127.0.0.1, and a DNS-rebinding page (evil.example resolving to 127.0.0.1) even reads the
 * answers. So before anything else a request is refused (403 `Unauthorized`) when its `Host` is
 * not this API's own authority (`127.0.0.1:<port>` or `localhost:<port>`; reason
 * `foreign-host`), or when it carries an `Origin` that is not this API's own origin (reason
 * `foreign-origin`; browsers send `Origin` on every cross-origin POST and fetch). The CLI sends
 * no `Origin` and the right `Host`.
 */
export interface ApiNode {
  readonly self: Handle
  relay: (frame: Uint8Array, mode: 'send' | 'invoke' | 'broadcast') => Promise<RelayReply | undefined>
  /** Metrics, events and the dashboard's data; without it those routes answer NotFound. */
  observe?: ObserveNode['observe']
  invoke?: ObserveNode['invoke']
  /** Streams: this node reads a stream the CLI opened and hands its chunks on over HTTP. */
  streams?: { relay: (frame: Uint8Array) => Promise<StreamReader> }
}

export interface ApiServer {
  readonly port: number
  readonly url: string
  close: () => Promise<void>
}

export const API_HOST = '127.0.0.1'
/** Host names that name this machine's loopback and no one else's: what `Host` may carry. */
const LOOPBACK_NAMES = [API_HOST, 'localhost'] as const

const STATUS: Record<string, number> = {
  BadRequest: 400, Unauthorized: 403, UnknownBehavior: 404, NotFound: 404, FrameTooLarge: 413,
  Expired: 408, Timeout: 504, Unreachable: 502, Overloaded: 503, NotRunning: 503, Replayed: 409
}

export async function startApi (node: ApiNode, opts: { port: number, maxBodyBytes: number, log: Logger }): Promise<ApiServer> {
  // The authorities and origins this API answers to; known once it listens (port 0 = any).
  const own = { authorities: new Set<string>(), origins: new Set<string>() }
  const server = createServer((req, res) => { void handle(node, { ...opts, own }, req, res) })
  server.keepAliveTimeout = 5_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port, API_HOST, () => { server.off('error', reject); resolve() })
  })
  const port = (server.address() as AddressInfo).port
  for (const name of LOOPBACK_NAMES) {
    own.authorities.add(`${name}:${port}`)
    own.origins.add(`http://${name}:${port}`)
  }
  return {
    port,
    url: `http://${API_HOST}:${port}`,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => { resolve() }))
    }
  }
}

interface Own { authorities: ReadonlySet<string>, origins: ReadonlySet<string> }

async function handle (node: ApiNode, opts: { maxBodyBytes: number, log: Logger, own: Own }, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const t0 = performance.now()
  // at debug: one line per request once answered (what the operator turns on to see the API work)
  res.once('finish', () => { opts.log.debug({ method: req.method, url: redacted(req.url), status: res.statusCode, ms: Math.round(performance.now() - t0) }, 'API request') })
  try {
    checkCaller(req, opts.own, opts.log)
    const url = req.url ?? '/'
    if (req.method === 'GET' && url === '/api/v1/actor/handle') return json(res, 200, node.self)
    if (req.method === 'GET' && node.observe !== undefined && node.invoke !== undefined &&
      await serveObserve({ self: node.self, observe: node.observe, invoke: node.invoke }, req, res, opts.log)) return
    if (req.method === 'POST' && url === '/api/v1/actor/stream' && node.streams !== undefined) {
      const reader = await node.streams.relay(await readBody(req, opts.maxBodyBytes))
      await serveStream(reader, res)
      return
    }
    const m = /^\/api\/v1\/actor\/(send|invoke|broadcast)$/.exec(url)
    if (req.method !== 'POST' || m === null) throw new NotFound(`no route ${req.method ?? ''} ${url}`)
    const body = await readBody(req, opts.maxBodyBytes)
    const result = await node.relay(body, m[1] as 'send' | 'invoke' | 'broadcast')
    json(res, 200, result ?? {})
  } catch (err) {
    // a bug's text stays in the log, under the id the caller is given
    const errorId = err instanceof DmsError ? undefined : randomUUID()
    const wire = toWireError(err, errorId)
    if (errorId !== undefined) opts.log.error({ err, errorId }, 'API request failed')
    // a route that already began its answer (an event stream) ends it; nothing else can be said
    if (res.headersSent) { res.end(); return }
    // no login yet (or a spent login token): 401, which a login cures, unlike a 403
    const login = wire.name === 'Unauthorized' && typeof wire.reason === 'string' && LOGIN_REASONS.has(wire.reason)
    json(res, login ? 401 : STATUS[wire.name] ?? 500, { error: wire })
  }
}

/** Lines one HTTP stream carries at most (every loop is bounded): one per chunk, as the pipes of src/stream/pump.ts. */
const MAX_STREAM_LINES = 10_000_000

/**
 * Hands a stream's chunks to the HTTP client as NDJSON, one line per chunk as it arrives (no
 * batching: a log line is on the wire within the turn it came). The next chunk is taken from the
 * stream — which grants the writer its credit — only once the socket took the previous one, so a
 * client that stops reading stops the writer. The client closing the connection (Ctrl-C, kill -9:
 * the kernel closes the socket) cancels the stream on the writer's node too.
 */
async function serveStream (reader: StreamReader, res: ServerResponse): Promise<void> {
  const gone = (): void => { reader.cancel('the API client closed the connection') }
  res.on('close', gone)
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' })
  res.flushHeaders()
  try {
    for (let i = 0; i < MAX_STREAM_LINES; i++) {
      const n = await reader.next()
      if (res.destroyed) return
      if (n.done === true) { res.end(JSON.stringify({ end: reader.endInfo ?? null }) + '\n'); return }
      if (!res.write(JSON.stringify({ chunk: n.value }) + '\n')) {
        await new Promise<void>(resolve => {
          const done = (): void => { res.off('drain', done); res.off('close', done); resolve() }
          res.on('drain', done)
          res.on('close', done)
        })
      }
    }
    reader.cancel(`gave up after ${MAX_STREAM_LINES} chunks`)
    res.end()
  } catch (err) {
    if (!res.destroyed) res.end(JSON.stringify({ error: toWireError(err) }) + '\n')
  } finally {
    res.off('close', gone)
    if (reader.state === 'open') reader.cancel('the HTTP answer ended')
  }
}

/** Refuses requests a browser page made: a foreign `Host` (DNS rebinding) or a foreign `Origin`. */
function checkCaller (req: IncomingMessage, own: Own, log: Logger): void {
  const host = (req.headers.host ?? '').toLowerCase()
  if (!own.authorities.has(host)) {
    log.warn({ host: host.slice(0, 100), url: redacted(req.url) }, 'API request refused: foreign Host')
    throw new Unauthorized(`the local API answers only to Host ${[...own.authorities].join(' or ')}`, { reason: 'foreign-host' })
  }
  const origin = req.headers.origin
  if (origin !== undefined && !own.origins.has(origin.toLowerCase())) {
    log.warn({ origin: origin.slice(0, 100), url: redacted(req.url) }, 'API request refused: foreign Origin')
    throw new Unauthorized('the local API does not answer requests from web pages of other origins', { reason: 'foreign-origin' })
  }
}

/** A request's URL as logged: a login token (`?token=`) is a secret and never reaches the log. */
export function redacted (url: string | undefined): string | undefined {
  return url?.replace(/([?&]token=)[^&#]*/g, '$1…').slice(0, 100)
}

async function readBody (req: IncomingMessage, limit: number): Promise<Uint8Array> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > limit) {
      req.destroy()
      throw new FrameTooLarge(`request body exceeds the frame limit of ${limit} bytes`, { limit })
    }
    chunks.push(chunk as Buffer)
  }
  if (size === 0) throw new BadRequest('the request body must be one envelope frame')
  return new Uint8Array(Buffer.concat(chunks))
}

export function json (res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}
