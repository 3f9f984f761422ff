import { existsSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { chromium, type Browser, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cleanup, startDaemon, stopAllocations, tempDir, type Daemon } from './harness.js'

/**
 * The dashboard in a real browser (Debian's chromium driven by playwright-core) against running
 * daemons: every page loads with no console error and no failed request, shows what the CLI
 * answers, and the log view follows a workload's output live. Screenshots of each page go to
 * the test's output dir (printed). Under CI a missing browser fails the test (.ci/run installs
 * it); elsewhere the suite skips and says why.
 */
/** The page's document, as the functions run in the browser see it (tsconfig has no DOM lib). */
declare const document: { body: { textContent: string | null }, querySelector: (s: string) => { textContent: string | null } | null }

const CHROMIUM = process.env.DMS_CHROMIUM ?? '/usr/bin/chromium'
const HAVE_BROWSER = existsSync(CHROMIUM)
const SKIP_REASON = `no browser at ${CHROMIUM} (apt-get install chromium, or set DMS_CHROMIUM)`
if (!HAVE_BROWSER && process.env.CI === undefined) console.warn(`dashboard tests skipped: ${SKIP_REASON}`)

describe.skipIf(!HAVE_BROWSER && process.env.CI === undefined)('dashboard (issue 16)', () => {
  let a: Daemon | undefined
  let b: Daemon | undefined
  let browser: Browser | undefined
  let page: Page
  let out: string
  const problems: string[] = []

  beforeAll(async () => {
    if (!HAVE_BROWSER) throw new Error(`CI must run the dashboard tests: ${SKIP_REASON}`)
    out = process.env.DMS_SCREENSHOT_DIR ?? await tempDir('dms-dashboard-')
    await mkdir(out, { recursive: true })
    console.log(`dashboard screenshots: ${out}`)
    a = await startDaemon()
    b = await startDaemon({ args: ['--bootstrap', a.info.addrs[0]] })
    expect((await a.cli(['onboard', '--cpu', '1', '--ram', '1GiB', '--disk', '2GiB'])).code).toBe(0)
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] })
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
    page.on('console', m => { if (m.type() === 'error') problems.push(`console: ${m.text()}`) })
    page.on('pageerror', e => { problems.push(`page error: ${e.message}`) })
    page.on('requestfailed', r => {
      // the log view aborts its own long poll when it closes (leaving the page): not a failure
      if (r.url().includes('/api/v1/ui/logs?') && r.failure()?.errorText === 'net::ERR_ABORTED') return
      problems.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`)
    })
    page.on('response', r => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`) })
  })

  afterAll(async () => {
    page?.removeAllListeners()
    await browser?.close()
    await stopAllocations(a)
    await cleanup([b, a])
  })

  const open = async (name: string): Promise<void> => {
    await page.goto(`${a!.info.api}/#/${name}`)
    await page.waitForSelector(`main[data-page="${name}"] h1`, { timeout: 15_000 })
  }
  const shot = async (name: string): Promise<void> => { await page.screenshot({ path: join(out, `${name}.png`), fullPage: true }) }

  it('without a login the page says how to get one; dms ui\'s URL logs the browser in, and the token leaves the address bar', async () => {
    // a browser of its own (no cookie), its refusals expected: not watched for problems
    const anon = await browser!.newPage()
    try {
      await anon.goto(`${a!.info.api}/#/overview`)
      await anon.waitForSelector('[data-testid="login"]', { timeout: 15_000 })
      expect(await anon.textContent('[data-testid="login"]')).toContain('dms ui')
      expect(await anon.textContent('body')).not.toContain(a!.info.did)
    } finally {
      await anon.close()
    }
    const { url } = await a!.cliJson<{ url: string }>(['ui'])
    expect(url).toContain('?token=')
    await page.goto(url)
    await page.waitForSelector('main[data-page="overview"] h1', { timeout: 15_000 })
    expect(page.url()).toBe(`${a!.info.api}/`)
    const cookies = await page.context().cookies()
    expect(cookies.map(c => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite }))).toEqual([{ name: `dms_ui_${new URL(a!.info.api).port}`, httpOnly: true, sameSite: 'Strict' }])
    expect(problems.join('\n')).toBe('')
  })

  it('Overview shows the node\'s DID, state and onboarded RAM as the CLI reports them', async () => {
    const self = await a!.cliJson(['peers', 'self', '--json'])
    const onboarded = await a!.cliJson(['node', 'resources', 'onboarded', '--json'])
    await open('overview')
    expect(await page.textContent('[data-testid="did"]')).toBe(self.did)
    expect(await page.textContent('[data-testid="peer-id"]')).toBe(self.id)
    expect(await page.textContent('[data-testid="state"]')).toBe('ready')
    expect(Number(await page.getAttribute('[data-testid="ram-onboarded"]', 'data-value'))).toBe(onboarded.resources.ramBytes)
    expect(await page.textContent('[data-testid="ram-onboarded"]')).toBe('1.0 GiB')
    // the event stream is open (the page updates live)
    await page.waitForSelector('[data-testid="live"]:text("live")', { timeout: 10_000 })
    await shot('overview')
    expect(problems.join('\n')).toBe('')
  })

  it('Peers lists the second daemon, connected, with its DID', async () => {
    await open('peers')
    const row = page.locator(`tr[data-peer="${b!.info.peerId}"]`)
    await row.waitFor({ timeout: 20_000 })
    // its DID arrives with its hello: the page reloads on the hello.heard event
    await page.waitForFunction((did) => document.body.textContent?.includes(did) === true, b!.info.did, { timeout: 20_000 })
    expect(await row.locator('td').nth(2).textContent()).toBe('yes')
    // its RTT, by libp2p ping from this node: a real measurement, on loopback well under a second
    const rtt = Number(await row.locator('[data-testid="rtt"]').getAttribute('data-value'))
    expect(rtt).toBeGreaterThan(0)
    expect(rtt).toBeLessThan(1000)
    expect(await row.locator('[data-testid="rtt"]').textContent()).toMatch(/^[\d.]+ ms$/)
    // the graph: this node, and a line to the connected peer
    const graph = page.locator('[data-testid="peer-graph"]')
    expect(await graph.locator(`g[data-node="${a!.info.peerId}"]`).count()).toBe(1)
    expect(await graph.locator(`g[data-node="${b!.info.peerId}"] circle`).getAttribute('class')).toBe('peer')
    expect(await graph.locator(`g[data-edge="${b!.info.peerId}"] line`).count()).toBe(1)
    await shot('peers')
    expect(problems.join('\n')).toBe('')
  })

  it('Workloads: an allocation started from the CLI appears live, and its output is followed', async () => {
    await open('workloads')
    const run = await a!.cliJson(['alloc', 'run', '--type', 'service', '--json', '--', 'sh', '-c', 'i=0; while [ $i -lt 300 ]; do echo tick-$i; i=$((i+1)); sleep 0.5; done'])
    const id = run.id as string
    // no reload: the allocation.status event brings it
    const row = page.locator(`tr[data-allocation="${id}"]`)
    await row.waitFor({ timeout: 20_000 })
    await row.click()
    await page.waitForFunction(() => document.querySelector('[data-testid="logs"]')?.textContent?.includes('tick-') === true, undefined, { timeout: 20_000 })
    const first = await page.textContent('[data-testid="logs"]') ?? ''
    const n = Math.max(...[...first.matchAll(/tick-(\d+)/g)].map(m => Number(m[1])))
    // a line the page had not shown when we looked arrives without any reload
    await page.waitForFunction((next) => document.querySelector('[data-testid="logs"]')?.textContent?.includes(`tick-${next}\n`) === true, n + 2, { timeout: 20_000 })
    expect(await row.locator('td').nth(3).textContent()).toBe('running')
    await shot('workloads')
    expect(problems.join('\n')).toBe('')
  })

  it('Deployments shows a real deployment: its status, timeline and allocation as the CLI reports them', async () => {
    await open('deployments')
    expect(await page.textContent('main')).toContain('No deployments')
    // one node pinned to this daemon: the only provider onboarded here
    const file = join(out, 'solo.yaml')
    await writeFile(file, `version: V1
allocations:
  svc:
    executor: process
    resources: { cpu: { cores: 0.1 }, ram: { size: 32MiB }, disk: { size: 1MiB } }
    execution: { cmd: [sleep, '600'] }
nodes:
  solo:
    allocations: [svc]
    peer: ${a!.info.peerId}
`)
    const r = await a!.cli(['deploy', file, '--timeout', '30s', '--bid-window', '300ms'], { timeoutMs: 45_000 })
    expect(r.code, r.stderr).toBe(0)
    const { ensembleId } = JSON.parse(r.stdout.trimEnd().split('\n').pop() as string) as { ensembleId: string }
    const status = await a!.cliJson<{ status: string, allocations: Record<string, { peer: string, status: string }> }>(['deployment', 'status', ensembleId])
    expect(status.status).toBe('Running')
    // no reload: the deployment.status events bring it
    const card = page.locator(`[data-ensemble="${ensembleId}"]`)
    await card.waitFor({ timeout: 20_000 })
    await page.waitForFunction((id) => document.querySelector(`[data-ensemble="${id}"] p .badge`)?.textContent === 'Running', ensembleId, { timeout: 20_000 })
    const names = Object.keys(status.allocations)
    expect(names.length).toBe(1)
    const cells = await card.locator('table tbody tr td').allTextContents()
    expect(cells.slice(0, 3)).toEqual([names[0], a!.info.peerId, status.allocations[names[0]].status])
    expect(await card.locator('.timeline li').count()).toBeGreaterThan(1)
    await shot('deployments')
    expect((await a!.cliJson<{ status: string }>(['deployment', 'shutdown', ensembleId])).status).toBe('Completed')
    expect(problems.join('\n')).toBe('')
  })

  it('Trust lists the roots, tokens held and issued by id with their expiry, and no token text', async () => {
    const grant = async (d: Daemon, subject: string, duration: string): Promise<string> => {
      const g = await d.cli(['cap', 'grant', subject, '--cap', '/dms/node/peers/list', '--duration', duration, '--token-only'])
      expect(g.code, g.stderr).toBe(0)
      return g.stdout.trim()
    }
    // held: b's owner lets a's node list b's peers; issued: a's owner lets b's user list a's peers
    const held = await grant(b!, a!.info.did, '2h')
    expect((await a!.cli(['cap', 'anchor', '--context', 'dms', '--provide', held])).code).toBe(0)
    const bUser = (await b!.cli(['key', 'did'])).stdout.trim()
    const issued = await grant(a!, bUser, '1h')
    expect((await a!.cli(['cap', 'anchor', '--context', 'dms', '--require', issued])).code).toBe(0)

    const caps = await a!.cliJson<{ roots: string[], provide: Array<{ id: string, expiry: string }>, require: Array<{ id: string, expiry: string }> }>(['actor', 'cmd', '/dms/cap/list'])
    expect(caps.provide.length).toBe(1)
    expect(caps.require.length).toBe(1)
    await open('trust')
    const roots = await page.locator('[data-testid="roots"] li').allTextContents()
    expect(roots).toEqual(caps.roots)
    for (const [testid, t] of [['provide', caps.provide[0]], ['require', caps.require[0]]] as const) {
      const row = page.locator(`[data-testid="${testid}"] tr[data-token="${t.id}"]`)
      expect(await row.locator('td').first().textContent()).toBe(t.id)
      expect(await row.locator('td[data-expiry]').getAttribute('data-expiry')).toBe(t.expiry)
      expect(await row.locator('td[data-expiry]').textContent()).toMatch(/\(in \d+[hm]/)
    }
    // a JWT is three base64url parts: none may reach the page, least of all these two
    const content = await page.content()
    expect(content).not.toContain(held.split('.')[2])
    expect(content).not.toContain(issued.split('.')[2])
    expect(content).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\./)
    await shot('trust')
    expect(problems.join('\n')).toBe('')
  })
})
