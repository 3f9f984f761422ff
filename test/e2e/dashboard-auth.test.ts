import { request } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cleanup, startDaemon, type Daemon } from './harness.js'

/**
 * Who may read the dashboard (issue 16, Jupyter's model) through a real daemon and the real CLI:
 * no data without the session cookie, which only `dms ui`'s one-time URL gives; `/metrics` and
 * the static files stay open; the token never reaches the daemon's log.
 */

interface Answer { status: number, headers: Record<string, string | string[] | undefined>, body: string }

/** One GET as a browser without the session (or with `cookie`), never following a redirect. */
async function get (api: string, path: string, o: { cookie?: string, host?: string } = {}): Promise<Answer> {
  const u = new URL(path, api)
  return await new Promise((resolve, reject) => {
    const headers: Record<string, string> = { host: o.host ?? u.host }
    if (o.cookie !== undefined) headers.cookie = o.cookie
    const req = request({ host: u.hostname, port: u.port, path: u.pathname + u.search, headers, timeout: 15_000 }, res => {
      let body = ''
      res.on('data', (d: Buffer) => { body += d.toString() })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, body }) })
    })
    req.on('timeout', () => { req.destroy(new Error('timeout')) })
    req.on('error', reject)
    req.end()
  })
}

describe('dashboard access (issue 16)', () => {
  let d: Daemon | undefined

  // debug: the API logs each request's URL, the login's too (with its token redacted)
  beforeAll(async () => { d = await startDaemon({ env: { DMS_LOG_LEVEL: 'debug' } }) })
  afterAll(async () => { await cleanup([d]) })

  it('without the cookie: every data route and the event stream answer 401 Unauthorized; /metrics and the page load', async () => {
    const api = d!.info.api
    for (const path of ['/api/v1/ui/overview', '/api/v1/ui/peers', '/api/v1/ui/trust', '/api/v1/ui/logs?id=x', '/api/v1/events?since=0', '/api/v1/events?follow=1']) {
      const r = await get(api, path)
      expect(r.status, path).toBe(401)
      expect(JSON.parse(r.body).error, path).toMatchObject({ name: 'Unauthorized', reason: 'no-session' })
    }
    // a made-up cookie of the right name is no better
    const port = new URL(api).port
    expect((await get(api, '/api/v1/ui/overview', { cookie: `dms_ui_${port}=made-up` })).status).toBe(401)
    expect((await get(api, '/metrics')).status).toBe(200)
    const page = await get(api, '/')
    expect(page.status).toBe(200)
    expect(page.body).toContain('/ui/app.js')
  })

  it('dms ui: its URL logs in once (HttpOnly, SameSite=Strict cookie, redirect to /); used again it is refused', async () => {
    const api = d!.info.api
    const { url, expiry } = await d!.cliJson<{ url: string, expiry: string }>(['ui'])
    expect(url).toMatch(new RegExp(`^${api.replace(/\./g, '\\.')}/\\?token=[A-Za-z0-9_-]{43}$`))
    expect(Date.parse(expiry)).toBeGreaterThan(Date.now())
    const token = new URL(url).searchParams.get('token')!

    const login = await get(api, new URL(url).pathname + new URL(url).search)
    expect(login.status).toBe(303)
    expect(login.headers.location).toBe('/')
    const setCookie = String(login.headers['set-cookie'])
    const port = new URL(api).port
    expect(setCookie).toMatch(new RegExp(`^dms_ui_${port}=[A-Za-z0-9_-]{43}; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200$`))
    const cookie = setCookie.split(';')[0]

    const overview = await get(api, '/api/v1/ui/overview', { cookie })
    expect(overview.status).toBe(200)
    expect(JSON.parse(overview.body).identity.did).toBe(d!.info.did)
    const events = await get(api, '/api/v1/events?since=0', { cookie })
    expect(events.status).toBe(200)
    expect(JSON.parse(events.body).events[0]).toMatchObject({ type: 'node.started' })

    const again = await get(api, `/?token=${token}`)
    expect(again.status).toBe(401)
    expect(JSON.parse(again.body).error).toMatchObject({ name: 'Unauthorized', reason: 'login-token' })
    expect(again.headers['set-cookie']).toBeUndefined()

    // the Host check comes before the login: a rebinding page cannot trade a token
    const second = new URL((await d!.cliJson<{ url: string }>(['ui'])).url)
    const foreign = await get(api, second.pathname + second.search, { host: 'evil.example:80' })
    expect(foreign.status).toBe(403)
    expect(JSON.parse(foreign.body).error.reason).toBe('foreign-host')
    // ... and the refused request did not spend the token
    expect((await get(api, second.pathname + second.search)).status).toBe(303)

    // the log shows the login, never its token
    const logged = JSON.stringify(d!.logs)
    expect(logged).not.toContain(token)
    expect(logged).not.toContain(second.searchParams.get('token'))
    expect(d!.logs.some(l => l.msg === 'API request' && l.url === '/?token=…' && l.status === 303)).toBe(true)
  })
})
