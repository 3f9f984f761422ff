import { existsSync, readFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import { BadRequest, NotFound, Unauthorized } from '../lib/errors.js'
import type { ObserveNode } from './observe.js'
import { requireSession, sessionCookieName } from './ui-auth.js'

/**
 * The web dashboard: static pages from `ui/` (no build step) with Preact and htm served as ES
 * modules straight from node_modules, and read-only JSON under `/api/v1/ui/` answered by the
 * node's own behaviours, invoked by the node itself. The browser holds no key and gets only what
 * those behaviours answer the CLI — token ids and their grants, never a token's text, a key or a
 * passphrase — and a workload's output (as `dms alloc logs` shows it).
 *
 * Pages update live from `/api/v1/events` (Server-Sent Events, observe.ts).
 *
 * Login (ui-auth.ts): `GET /?token=<one-time token>` sets the session cookie and redirects to `/`,
 * so the token leaves the address bar and the history; every `/api/v1/ui/` answer needs the
 * cookie. The static files are public: the page itself says how to log in when its data is refused.
 */

const HERE = dirname(fileURLToPath(import.meta.url))

/** `ui/` of the package: two levels up from src/api/, three from dist/src/api/. */
function uiDir (): string {
  for (const up of ['../..', '../../..']) {
    const dir = resolve(HERE, up, 'ui')
    if (existsSync(join(dir, 'index.html'))) return dir
  }
  throw new Error(`the dashboard's files (ui/index.html) are not found above ${HERE}`)
}

interface Asset { type: string, body: Buffer }

/** Read once, at the first request: a few small files, served from memory. */
let assets: Map<string, Asset> | undefined

function loadAssets (): Map<string, Asset> {
  const require = createRequire(import.meta.url)
  const dir = uiDir()
  const js = 'text/javascript; charset=utf-8'
  const m = new Map<string, Asset>()
  const file = (path: string): Buffer => readFileSync(path)
  m.set('/', { type: 'text/html; charset=utf-8', body: file(join(dir, 'index.html')) })
  m.set('/ui/app.js', { type: js, body: file(join(dir, 'app.js')) })
  m.set('/ui/style.css', { type: 'text/css; charset=utf-8', body: file(join(dir, 'style.css')) })
  m.set('/ui/favicon.svg', { type: 'image/svg+xml', body: file(join(dir, 'favicon.svg')) })
  // browsers ask for /favicon.ico whatever the page says: answer rather than log a 404
  m.set('/favicon.ico', m.get('/ui/favicon.svg') as Asset)
  m.set('/ui/vendor/preact.mjs', { type: js, body: file(require.resolve('preact')) })
  // hooks import the bare specifier 'preact', which a browser cannot resolve without an import
  // map (an inline script the page's CSP would have to allow): point it at the served file
  const hooks = file(require.resolve('preact/hooks')).toString('utf8').replace(/from\s*(['"])preact\1/g, 'from"/ui/vendor/preact.mjs"')
  m.set('/ui/vendor/hooks.mjs', { type: js, body: Buffer.from(hooks) })
  // htm's exports give require() its CommonJS build; the ES module lies beside it
  m.set('/ui/vendor/htm.mjs', { type: js, body: file(join(dirname(require.resolve('htm')), 'htm.mjs')) })
  return m
}

/** Every page asks for nothing but this server: scripts, styles, data and the event stream. */
const PAGE_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store'
}

/** Deadline of the dashboard's calls to the node's own behaviours. */
const UI_CALL_TIMEOUT_MS = 10_000
/** A log follow waits at most this long for more output before answering (the page asks again). */
const LOG_POLL_MS = 20_000
const LOG_MAX_BYTES = 64 * 1024

export async function serveDashboard (node: ObserveNode, url: URL, req: IncomingMessage, res: ServerResponse, log: Logger): Promise<boolean> {
  const path = url.pathname
  if (path === '/' && url.searchParams.has('token')) {
    login(node, url, req, res)
    log.info('dashboard login')
    return true
  }
  if (path === '/' || path === '/favicon.ico' || path.startsWith('/ui/')) {
    assets ??= loadAssets()
    const a = assets.get(path)
    if (a === undefined) throw new NotFound(`no dashboard file ${path.slice(0, 100)}`)
    res.writeHead(200, { ...PAGE_HEADERS, 'content-type': a.type, 'content-length': a.body.length })
    res.end(a.body)
    return true
  }
  const m = /^\/api\/v1\/ui\/([a-z]+)$/.exec(path)
  if (m === null) return false
  requireSession(node.observe.ui, req)
  const ask = async <T>(behavior: string, payload: unknown = {}): Promise<T> => await node.invoke(node.self, behavior, payload, { timeout: UI_CALL_TIMEOUT_MS }) as T
  let value: unknown
  switch (m[1]) {
    case 'overview': value = await overview(ask, node); break
    case 'peers': value = await peers(ask, node); break
    case 'workloads': value = await workloads(ask); break
    case 'deployments': value = await ask('/dms/node/deployment/list'); break
    case 'trust': value = await ask('/dms/cap/list'); break
    case 'logs': value = await logs(node, url, res); break
    default: throw new NotFound(`no dashboard data '${m[1]}'`)
  }
  const body = JSON.stringify(value)
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' })
  res.end(body)
  log.trace({ what: m[1] }, 'dashboard data')
  return true
}

/**
 * Trades the one-time token for a session: HttpOnly (no script reads it), SameSite=Strict (no
 * other site's page sends it), Path=/; then 303 to `/`. A spent, expired or unknown token is a
 * 401, and does not say which of those it was.
 */
function login (node: ObserveNode, url: URL, req: IncomingMessage, res: ServerResponse): void {
  const got = node.observe.ui.exchange(url.searchParams.get('token') ?? '')
  if (got === undefined) throw new Unauthorized('this login link was used already or has expired: run `dms ui` for a new one', { reason: 'login-token' })
  res.writeHead(303, {
    ...PAGE_HEADERS,
    location: '/',
    'set-cookie': `${sessionCookieName(req)}=${got.session}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${got.maxAgeS}`,
    'content-length': 0
  })
  res.end()
}

type Ask = <T>(behavior: string, payload?: unknown) => Promise<T>

interface PeerRow { id: string, did?: string, addrs: string[], connected: boolean, lastHelloAt?: string }

async function overview (ask: Ask, node: ObserveNode): Promise<unknown> {
  const [self, status, node_, peerList, deployments] = await Promise.all([
    ask<{ id: string, did: string, addrs: string[] }>('/dms/node/peers/self'),
    ask<{ version: string, uptimeS: number }>('/public/status'),
    ask<Record<string, unknown> & { allocations: { total: number, running: number } }>('/dms/node/status'),
    ask<{ peers: PeerRow[] }>('/dms/node/peers/list'),
    ask<{ deployments: Array<{ status: string }> }>('/dms/node/deployment/list')
  ])
  return {
    identity: { peerId: self.id, did: self.did, addrs: self.addrs },
    version: status.version,
    uptimeS: status.uptimeS,
    status: node_,
    counts: {
      peersKnown: peerList.peers.length,
      peersConnected: peerList.peers.filter(p => p.connected).length,
      allocations: node_.allocations.total,
      allocationsRunning: node_.allocations.running,
      deployments: deployments.deployments.length,
      events: node.observe.events.last
    }
  }
}

/** An RTT measured this recently is shown again rather than measured again (the page reloads often). */
const RTT_FRESH_MS = 10_000
const RTT_PING_TIMEOUT_MS = 2_000
/** Peers pinged for one answer at most: the rest show their last RTT, or none. */
const RTT_MAX_PINGS = 16

interface Rtt { ms?: number, at: number }
/** Per node (two nodes may share a process): peer id → last RTT. */
const rtts = new WeakMap<object, Map<string, Rtt>>()

/**
 * Round-trip times of the connected peers, by `/dms/node/peers/ping` (libp2p ping), each at
 * most RTT_FRESH_MS old. A peer that did not answer within RTT_PING_TIMEOUT_MS shows none.
 */
async function peerRtts (node: ObserveNode, connected: string[]): Promise<Map<string, Rtt>> {
  let known = rtts.get(node.observe)
  if (known === undefined) { known = new Map(); rtts.set(node.observe, known) }
  const now = Date.now()
  for (const id of known.keys()) if (!connected.includes(id)) known.delete(id)
  const stale = connected.filter(id => (known.get(id)?.at ?? 0) < now - RTT_FRESH_MS).slice(0, RTT_MAX_PINGS)
  await Promise.all(stale.map(async id => {
    try {
      const { rttMs } = await node.invoke(node.self, '/dms/node/peers/ping', { peer: id }, { timeout: RTT_PING_TIMEOUT_MS }) as { rttMs: number }
      known.set(id, { ms: rttMs, at: Date.now() })
    } catch {
      known.set(id, { at: Date.now() })
    }
  }))
  return known
}

async function peers (ask: Ask, node: ObserveNode): Promise<unknown> {
  const [self, list, scores] = await Promise.all([
    ask<{ id: string, did: string }>('/dms/node/peers/self'),
    ask<{ peers: PeerRow[] }>('/dms/node/peers/list'),
    ask<{ scores: Record<string, Record<string, number>> }>('/dms/node/peers/score')
  ])
  const rtt = await peerRtts(node, list.peers.filter(p => p.connected).map(p => p.id))
  return {
    self: { id: self.id, did: self.did },
    peers: list.peers.map(p => ({ ...p, score: scores.scores[p.id]?.score, rttMs: p.connected ? rtt.get(p.id)?.ms : undefined }))
  }
}

async function workloads (ask: Ask): Promise<unknown> {
  const { allocations } = await ask<{ allocations: Array<Record<string, unknown>> }>('/dms/node/allocations/list')
  // the command line stays out of the browser: it is the one field an owner may have put a
  // secret in (an argument), and the page does not need it
  return { allocations: allocations.map(({ command: _command, ...rest }) => rest) }
}

/** `?id=<allocation>&stream=stdout|stderr&offset=<n>&wait=1`: a chunk of its output. */
async function logs (node: ObserveNode, url: URL, res: ServerResponse): Promise<unknown> {
  const id = url.searchParams.get('id') ?? ''
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(id)) throw new BadRequest('id must be an allocation id', { field: 'id' })
  const stream = url.searchParams.get('stream') ?? 'stdout'
  if (stream !== 'stdout' && stream !== 'stderr') throw new BadRequest('stream must be stdout or stderr', { field: 'stream' })
  const offsetText = url.searchParams.get('offset') ?? '0'
  if (!/^\d{1,15}$/.test(offsetText)) throw new BadRequest('offset must be a byte offset', { field: 'offset' })
  const wait = url.searchParams.get('wait') === '1'
  // the page leaving (a closed connection) ends the wait at once
  const gone = new AbortController()
  res.once('close', () => { gone.abort() })
  const signal = AbortSignal.any([gone.signal, AbortSignal.timeout(LOG_POLL_MS)])
  return await node.observe.allocationLogs(id, { stream, offset: Number(offsetText), maxBytes: LOG_MAX_BYTES, wait, signal })
}
