import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import type { Handle } from '../actor/types.js'
import { BadRequest } from '../lib/errors.js'
import type { NodeEvent, NodeEvents } from '../node/events.js'
import type { LogChunk, LogStream } from '../services/allocations/index.js'
import { serveDashboard } from './dashboard.js'
import { requireSession, type UiAuth } from './ui-auth.js'

/**
 * The operator's read-only routes of the local API: `/metrics` (what Prometheus scrapes: a GET
 * with no Origin), the event stream, and the dashboard (dashboard.ts). They sit behind the same
 * Host and Origin checks as every other route (server.ts), and answer only GETs.
 *
 * Who may read what:
 * - `/metrics` needs nothing: Prometheus scrapes it without a login, and it holds counts, sizes and
 *   states only — behaviour paths, error names, peer counts, never an id of a workload, a DID, a
 *   token or a key (label values are bounded, metrics.ts). Anyone on this machine may read it.
 * - the event stream and every `/api/v1/ui/` answer need the dashboard's session cookie, got by
 *   opening the one-time login URL `dms ui` prints (ui-auth.ts); 401 `Unauthorized` otherwise.
 * - the static files (`/`, `/ui/…`) are public: they are the same for everyone and hold no data.
 */
export interface ObserveNode {
  readonly self: Handle
  observe: {
    events: NodeEvents
    metrics: { scrape: () => Promise<{ contentType: string, body: string }> }
    ui: UiAuth
    allocationLogs: (id: string, o: { stream: LogStream, offset: number, maxBytes: number, wait: boolean, signal: AbortSignal }) => Promise<LogChunk & { ended: boolean }>
  }
  /** Invokes one of the node's own behaviours as the node itself (the dashboard's data). */
  invoke: (dest: Handle, behavior: string, payload: unknown, opts: { timeout: number }) => Promise<unknown>
}

/** An event stream left unread beyond this many bytes is closed: the client reconnects with Last-Event-ID. */
const SSE_MAX_BUFFERED_BYTES = 1024 * 1024
/** A comment line this often keeps proxies and idle timers from closing a quiet stream. */
const SSE_HEARTBEAT_MS = 15_000

/** True when it answered the request. */
export async function serveObserve (node: ObserveNode, req: IncomingMessage, res: ServerResponse, log: Logger): Promise<boolean> {
  const url = new URL(req.url ?? '/', 'http://localhost')
  if (url.pathname === '/metrics') {
    const { contentType, body } = await node.observe.metrics.scrape()
    res.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' })
    res.end(body)
    return true
  }
  if (url.pathname === '/api/v1/events') {
    requireSession(node.observe.ui, req)
    serveEvents(node.observe.events, url, req, res)
    return true
  }
  return await serveDashboard(node, url, req, res, log)
}

/** `since`: a sequence number, events after it are sent (Last-Event-ID on a reconnect); `now`: only new ones. */
function parseSince (v: string | string[] | null | undefined, last: number): number {
  if (v === null || v === undefined || v === '') return 0
  const s = Array.isArray(v) ? v[0] : v
  if (s === 'now') return last
  if (!/^\d{1,15}$/.test(s)) throw new BadRequest(`since must be an event sequence number, got '${s.slice(0, 40)}'`, { field: 'since' })
  return Number(s)
}

/**
 * `GET /api/v1/events?since=<seq>`: JSON `{events, first, last}` of what is kept after `since`;
 * with `follow=1` or `Accept: text/event-stream`, Server-Sent Events — the kept events after
 * `since` (or after Last-Event-ID), then each new one as it happens, `id:` being its seq.
 */
function serveEvents (events: NodeEvents, url: URL, req: IncomingMessage, res: ServerResponse): void {
  // a reconnecting EventSource sends Last-Event-ID: it wins over the URL's since
  const since = parseSince(req.headers['last-event-id'] ?? url.searchParams.get('since'), events.last)
  const follow = url.searchParams.get('follow') === '1' || (req.headers.accept ?? '').includes('text/event-stream')
  if (!follow) {
    const body = JSON.stringify({ events: events.since(since), first: events.first, last: events.last })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' })
    res.end(body)
    return
  }
  let sent = since
  const write = (e: NodeEvent): void => {
    if (e.seq <= sent || res.writableEnded) return
    sent = e.seq
    res.write(`id: ${e.seq}\ndata: ${JSON.stringify(e)}\n\n`)
    if (res.writableLength > SSE_MAX_BUFFERED_BYTES) res.end()
  }
  // subscribe before the headers: a refusal (too many followers) is still a JSON error
  const unsubscribe = events.subscribe(write)
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', 'x-accel-buffering': 'no' })
  res.write(': dms events\n\n')
  for (const e of events.since(since)) write(e)
  const beat = setInterval(() => { if (!res.writableEnded) res.write(': keep-alive\n\n') }, SSE_HEARTBEAT_MS)
  beat.unref()
  res.once('close', () => { unsubscribe(); clearInterval(beat) })
}
