import { createHash, randomBytes } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { Unauthorized } from '../lib/errors.js'

/**
 * Who may read the dashboard, as Jupyter does it: the owner asks the node for a one-time login
 * token (`dms ui` → `/dms/node/ui/token`, authorized like any behaviour), opens
 * `http://127.0.0.1:<port>/?token=…`, and the API trades the token, once, for a session cookie
 * (HttpOnly, SameSite=Strict) kept in memory until it expires or the daemon stops.
 *
 * Loopback alone is no boundary: every local process (any user's) can reach 127.0.0.1, and the
 * dashboard shows workloads' output and the trust setup. The token is what proves the browser
 * was sent by someone holding the user key.
 *
 * Tokens and sessions are kept by their SHA-256 only: a Map lookup on the hash gives away no
 * timing about the secret itself, and a heap dump holds no usable value. Both tables are bounded
 * (the oldest entry goes first), so asking for tokens in a loop cannot grow memory.
 */
export const UI_TOKEN_TTL_MS = 5 * 60_000
export const UI_SESSION_TTL_MS = 12 * 3_600_000
export const UI_MAX_TOKENS = 16
export const UI_MAX_SESSIONS = 32

export interface UiAuth {
  /** A fresh one-time login token and when it stops working (ISO-8601). */
  issueToken: () => { token: string, expiry: string }
  /** Trades a token for a session (once): the session's secret and lifetime, or undefined. */
  exchange: (token: string) => { session: string, maxAgeS: number } | undefined
  /** Whether `session` (the cookie's value) is a live session. */
  check: (session: string | undefined) => boolean
  /** Pending tokens and live sessions (tests, metrics of the page's own use). */
  readonly counts: { tokens: number, sessions: number }
}

const hash = (secret: string): string => createHash('sha256').update(secret).digest('base64url')

/** Inserts into a bounded map: expired entries leave first, then the oldest ones. */
function put (m: Map<string, number>, key: string, expiresAt: number, max: number, now: number): void {
  for (const [k, exp] of m) if (exp <= now) m.delete(k)
  // a Map iterates in insertion order: the first key is the oldest; bounded by max
  for (let i = 0; m.size >= max && i < max; i++) m.delete(m.keys().next().value as string)
  m.set(key, expiresAt)
}

export function createUiAuth (opts: { now?: () => number, tokenTtlMs?: number, sessionTtlMs?: number } = {}): UiAuth {
  const now = opts.now ?? Date.now
  const tokenTtl = opts.tokenTtlMs ?? UI_TOKEN_TTL_MS
  const sessionTtl = opts.sessionTtlMs ?? UI_SESSION_TTL_MS
  const tokens = new Map<string, number>()
  const sessions = new Map<string, number>()
  return {
    issueToken: () => {
      const token = randomBytes(32).toString('base64url')
      const exp = now() + tokenTtl
      put(tokens, hash(token), exp, UI_MAX_TOKENS, now())
      return { token, expiry: new Date(exp).toISOString() }
    },
    exchange: (token) => {
      const key = hash(token)
      const exp = tokens.get(key)
      // one-time: gone whether it was still good or not
      tokens.delete(key)
      if (exp === undefined || exp <= now()) return undefined
      const session = randomBytes(32).toString('base64url')
      put(sessions, hash(session), now() + sessionTtl, UI_MAX_SESSIONS, now())
      return { session, maxAgeS: Math.floor(sessionTtl / 1000) }
    },
    check: (session) => {
      if (session === undefined || session === '') return false
      const key = hash(session)
      const exp = sessions.get(key)
      if (exp === undefined) return false
      if (exp <= now()) { sessions.delete(key); return false }
      return true
    },
    get counts () { return { tokens: tokens.size, sessions: sessions.size } }
  }
}

/** Reasons of the refusals that a login cures: answered 401 rather than 403 (server.ts). */
export const LOGIN_REASONS: ReadonlySet<string> = new Set(['no-session', 'login-token'])

/**
 * The session cookie's name. Cookies are shared by every port of a host, so two daemons of one
 * machine (two data dirs) would overwrite each other's under one name: the port is part of it.
 */
export function sessionCookieName (req: IncomingMessage): string {
  return `dms_ui_${req.socket.localPort ?? 0}`
}

function cookie (req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=')
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim()
  }
  return undefined
}

/** Throws 401 `Unauthorized` (reason `no-session`) unless the request carries a live session cookie. */
export function requireSession (ui: Pick<UiAuth, 'check'>, req: IncomingMessage): void {
  if (ui.check(cookie(req, sessionCookieName(req)))) return
  throw new Unauthorized('the dashboard needs a login: run `dms ui` and open the URL it prints', { reason: 'no-session' })
}
