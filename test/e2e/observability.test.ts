import { spawn } from 'node:child_process'
import { request } from 'node:http'
import { createInterface } from 'node:readline'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BIN, PASSPHRASE, ROOT, cleanup, startDaemon, type Daemon } from './harness.js'
import { samples } from '../helpers/prometheus.js'

/**
 * Issue 16 through real daemons: `/metrics` scraped as Prometheus does, the event stream followed
 * by `dms events --follow` while a second daemon joins, and log levels changed at run time.
 */

/** A GET as a scraper sends it: no Origin; the Host given (the API's own unless said otherwise). */
async function get (api: string, path: string, host?: string, cookie?: string): Promise<{ status: number, type: string, body: string, setCookie?: string }> {
  const u = new URL(path, api)
  return await new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path: u.pathname + u.search, headers: { host: host ?? u.host, ...(cookie !== undefined ? { cookie } : {}) }, timeout: 15_000 }, res => {
      let body = ''
      res.on('data', (d: Buffer) => { body += d.toString() })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body, setCookie: res.headers['set-cookie']?.[0] }) })
    })
    req.on('timeout', () => { req.destroy(new Error('timeout')) })
    req.on('error', reject)
    req.end()
  })
}

/** The dashboard's session cookie, by `dms ui`'s one-time URL (the event stream needs it). */
async function login (d: Daemon): Promise<string> {
  const u = new URL((await d.cliJson<{ url: string }>(['ui'])).url)
  const r = await get(d.info.api, u.pathname + u.search)
  expect(r.status).toBe(303)
  return (r.setCookie ?? '').split(';')[0]
}

/** Every line a comment, or `name{label="value",...} number` (what a Prometheus parser accepts). */
const SAMPLE_LINE = /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/
const COMMENT_LINE = /^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*$/

describe('observability (issue 16)', () => {
  let a: Daemon | undefined
  let b: Daemon | undefined

  beforeAll(async () => {
    // info, so that a debug line appears only once the level is changed at run time
    a = await startDaemon({ env: { DMS_LOG_LEVEL: 'info' } })
  })
  afterAll(async () => { await cleanup([b, a]) })

  it('GET /metrics: the text format parses; /public/status counted exactly; onboarded RAM shown', async () => {
    const d = a!
    const before = await get(d.info.api, '/metrics')
    expect(before.status).toBe(200)
    expect(before.type).toMatch(/^text\/plain/)
    const key = 'dms_envelopes_received_total{behavior="/public/status",outcome="ok"}'
    const n0 = samples(before.body).get(key) ?? 0
    const calls = 3
    for (let i = 0; i < calls; i++) {
      const r = await d.cli(['actor', 'cmd', '/public/status'])
      expect(r.code, r.stderr).toBe(0)
    }
    expect((await d.cli(['onboard', '--cpu', '1', '--ram', '1GiB', '--disk', '1GiB'])).code).toBe(0)

    const after = await get(d.info.api, '/metrics')
    const lines = after.body.split('\n').filter(l => l !== '')
    const bad = lines.filter(l => !SAMPLE_LINE.test(l) && !COMMENT_LINE.test(l))
    expect(bad).toEqual([])
    const s = samples(after.body)
    expect(s.get(key)).toBe(n0 + calls)
    expect(s.get('dms_resources_ram_bytes{state="onboarded"}')).toBe(1024 ** 3)
    expect(s.get('dms_resources_ram_bytes{state="free"}')).toBe(1024 ** 3)
    expect(s.get('dms_resources_cpu_cores{state="onboarded"}')).toBe(1)
    expect(s.get('dms_node_state{state="ready"}')).toBe(1)
    expect(s.get('dms_actors{kind="node"}')).toBe(1)
    // the CLI's invokes were relayed and each sent one reply
    expect(s.get('dms_envelopes_sent_total{behavior="/public/status",mode="relay"}')).toBeGreaterThanOrEqual(calls)
    // the CLI's key is a root here: its capability checks were answered, none refused
    expect([...s.keys()].some(k => k.startsWith('dms_capability_checks_total{result="cold"') || k.startsWith('dms_capability_checks_total{result="cached"'))).toBe(true)
    expect(s.get('dms_process_resident_memory_bytes')).toBeGreaterThan(0)
    for (const name of ['dms_invoke_duration_seconds', 'dms_mailbox_depth', 'dms_peers', 'dms_hello_total', 'dms_allocations', 'dms_deployments', 'dms_libp2p_connections']) {
      expect(after.body, name).toContain(`# TYPE ${name} `)
    }
  })

  it('GET /metrics keeps the API\'s Host check', async () => {
    const r = await get(a!.info.api, '/metrics', 'evil.example:80')
    expect(r.status).toBe(403)
    expect(JSON.parse(r.body).error.reason).toBe('foreign-host')
  })

  it('dms events --follow shows a second daemon joining; onboarding produced an event', async () => {
    const d = a!
    // the event stream as JSON (no follow) already holds the onboarding of the first test
    const json = JSON.parse((await get(d.info.api, '/api/v1/events?since=0', undefined, await login(d))).body) as { events: Array<{ type: string, seq: number, at: string }>, last: number }
    const onboarding = json.events.find(e => e.type === 'onboarding.changed')
    expect(onboarding).toMatchObject({ type: 'onboarding.changed', onboarded: true, resources: { ramBytes: 1024 ** 3 } })
    expect(new Date(onboarding!.at).toISOString()).toBe(onboarding!.at)

    const follower = spawn(process.execPath, [BIN, 'events', '--follow', '--since', String(json.last), '--data-dir', d.dataDir], {
      cwd: ROOT, env: { ...process.env, DMS_PASSPHRASE: PASSPHRASE, DMS_LOG_FORMAT: 'json' }, stdio: ['ignore', 'pipe', 'pipe']
    })
    try {
      const seen: Array<Record<string, unknown>> = []
      let joined: ((peer: string) => void) | undefined
      const lines = createInterface({ input: follower.stdout })
      lines.on('line', line => {
        const e = JSON.parse(line) as Record<string, unknown>
        seen.push(e)
        if (e.type === 'peer.connected' && typeof e.peer === 'string') joined?.(e.peer)
      })
      // no need to wait for the follower's first poll: it asks for every event after json.last,
      // and the ring keeps them
      const peerJoined = new Promise<string>((resolve, reject) => {
        joined = resolve
        setTimeout(() => { reject(new Error(`no peer.connected event within 30 s; seen: ${JSON.stringify(seen)}`)) }, 30_000).unref()
      })
      b = await startDaemon({ args: ['--bootstrap', d.info.addrs[0]] })
      const peer = await peerJoined
      expect(peer).toBe(b.info.peerId)
      expect(seen.every(e => typeof e.seq === 'number' && typeof e.at === 'string' && typeof e.type === 'string')).toBe(true)
    } finally {
      follower.kill('SIGTERM')
    }
  })

  it('dms node logger --level debug: a debug line appears in the daemon\'s log', async () => {
    const d = a!
    const debugLines = (): number => d.logs.filter(l => l.level === 20 && l.msg === 'API request').length
    expect((await d.cliJson(['node', 'logger'])).level).toBe('info')
    // at info nothing logs the API's requests
    await d.cli(['actor', 'cmd', '/public/status'])
    expect(debugLines()).toBe(0)

    const changed = await d.cliJson(['node', 'logger', '--level', 'debug'])
    expect(changed).toEqual({ level: 'debug', parts: {} })
    const r = await get(d.info.api, '/metrics')
    expect(r.status).toBe(200)
    const deadline = Date.now() + 10_000
    // the daemon's stderr is read by another stream: bounded wait for the line to arrive
    const scraped = (): boolean => d.logs.some(l => l.level === 20 && l.msg === 'API request' && l.url === '/metrics')
    for (let i = 0; i < 100 && !scraped() && Date.now() < deadline; i++) await new Promise(resolve => setTimeout(resolve, 100))
    expect(debugLines()).toBeGreaterThan(0)
    expect(d.logs.filter(l => l.msg === 'API request').map(l => ({ level: l.level, part: l.part, url: l.url }))).toContainEqual({ level: 20, part: 'api', url: '/metrics' })

    // per part: back to info, with only hello at debug
    expect(await d.cliJson(['node', 'logger', '--level', 'info', '--part', 'hello=debug'])).toEqual({ level: 'info', parts: { hello: 'debug' } })
    const bad = await d.cli(['node', 'logger', '--level', 'loud'])
    expect(bad.code).not.toBe(0)
    expect(bad.stderr).toContain('loud')
  })
})
