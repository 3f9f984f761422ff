import { chmod, mkdir, readFile, readdir, writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import { delimiter, join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ApiClient } from '../../src/api/client.js'
import { buildEnvelope, parseDest } from '../../src/cli/call.js'
import { Keystore } from '../../src/identity/keystore.js'
import { PASSPHRASE, cleanup, dms, dmsJson, startDaemon, tail, tempDir, type Daemon } from './harness.js'

/**
 * Hardening of issue 12 through running daemons: each attack gets a typed refusal, the daemon
 * keeps serving, and a valid call succeeds right after.
 */

interface HttpReply { status: number, json: { error?: { name: string, code: string, reason?: string } } & Record<string, unknown> }

/** One real HTTP request to a daemon's API, with exactly the headers given (Host included). */
async function http (api: string, method: 'GET' | 'POST', path: string, headers: Record<string, string>, body?: Uint8Array): Promise<HttpReply> {
  const url = new URL(api)
  return await new Promise<HttpReply>((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, method, path, headers, setHost: false, timeout: 20_000 }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        try { resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) }) } catch (err) { reject(err) }
      })
      res.on('error', reject)
    })
    req.on('timeout', () => { req.destroy(new Error('no answer within 20 s')) })
    req.on('error', reject)
    req.end(body === undefined ? undefined : Buffer.from(body))
  })
}

describe('local API: only the CLI, never a web page (issue 12, item 5)', () => {
  let d: Daemon
  let own: string
  /** A valid, signed invocation of /public/status by the data dir's user (a fresh nonce each). */
  let frame: () => Promise<Uint8Array>

  beforeAll(async () => {
    d = await startDaemon()
    own = new URL(d.info.api).host
    const identity = await new Keystore(d.dataDir).load('user', PASSPHRASE)
    const session = { daemon: d.info, api: new ApiClient(d.info.api), identity }
    frame = async () => (await buildEnvelope({ dataDir: d.dataDir, context: 'user', timeoutMs: 10_000 }, session, parseDest(d.info.did), '/public/status', {}, { cont: true })).frame
  })
  afterAll(async () => { await cleanup([d]) })

  const octet = { 'content-type': 'application/octet-stream' }

  it('answers the CLI\'s own form of request: Host 127.0.0.1:<port>, no Origin', async () => {
    const handle = await http(d.info.api, 'GET', '/api/v1/actor/handle', { host: own })
    expect(handle).toMatchObject({ status: 200, json: { id: d.info.did } })
    const invoked = await http(d.info.api, 'POST', '/api/v1/actor/invoke', { host: own, ...octet }, await frame())
    expect(invoked).toMatchObject({ status: 200, json: { reply: { ok: { status: 'running' } } } })
  })

  it('refuses a foreign Origin with 403 Unauthorized (foreign-origin), even carrying a valid signed envelope', async () => {
    for (const origin of ['http://evil.example', 'null', `http://${own}.evil.example`, 'https://127.0.0.1']) {
      const r = await http(d.info.api, 'POST', '/api/v1/actor/invoke', { host: own, origin, ...octet }, await frame())
      expect({ origin, ...r }).toMatchObject({ origin, status: 403, json: { error: { name: 'Unauthorized', code: 'UNAUTHORIZED', reason: 'foreign-origin' } } })
    }
    const get = await http(d.info.api, 'GET', '/api/v1/actor/handle', { host: own, origin: 'http://evil.example' })
    expect(get).toMatchObject({ status: 403, json: { error: { name: 'Unauthorized', reason: 'foreign-origin' } } })
    // the API's own origin is not foreign
    const same = await http(d.info.api, 'POST', '/api/v1/actor/invoke', { host: own, origin: `http://${own}`, ...octet }, await frame())
    expect(same.status).toBe(200)
  })

  it('refuses a foreign Host (DNS rebinding) with 403 Unauthorized (foreign-host)', async () => {
    const port = new URL(d.info.api).port
    for (const host of ['evil.example:9999', `evil.example:${port}`, '127.0.0.1:1', '']) {
      const r = await http(d.info.api, 'POST', '/api/v1/actor/invoke', { host, ...octet }, await frame())
      expect({ host, ...r }).toMatchObject({ host, status: 403, json: { error: { name: 'Unauthorized', code: 'UNAUTHORIZED', reason: 'foreign-host' } } })
    }
    const get = await http(d.info.api, 'GET', '/api/v1/actor/handle', { host: 'evil.example:9999' })
    expect(get).toMatchObject({ status: 403, json: { error: { reason: 'foreign-host' } } })
    // `localhost` names the loopback too: no rebinding page can use it
    expect((await http(d.info.api, 'GET', '/api/v1/actor/handle', { host: `localhost:${port}` })).status).toBe(200)
  })

  it('keeps serving: a valid CLI call succeeds after the refusals', async () => {
    expect((await d.cliJson(['actor', 'cmd', '/public/status'])).status).toBe('running')
  })
})

describe('child processes of the daemon (issue 12, item 7)', () => {
  let d: Daemon | undefined
  const dirs: string[] = []
  afterAll(async () => { await cleanup([d], dirs) })

  it('a GPU probe the daemon runs at start sees no DMS_PASSPHRASE and no other variable of the daemon', async () => {
    const bin = await tempDir('dms-e2e-bin-')
    dirs.push(bin)
    const dump = join(bin, 'nvidia-smi.env')
    await mkdir(bin, { recursive: true })
    await writeFile(join(bin, 'nvidia-smi'), `#!/bin/sh\nenv > '${dump}'\nprintf '0, Fake GPU, 2048\\n'\n`)
    await chmod(join(bin, 'nvidia-smi'), 0o755)
    const PATH = `${bin}${delimiter}${process.env.PATH ?? ''}`
    d = await startDaemon({ env: { PATH, SOME_API_TOKEN: 'tok-e2e' } })
    // the daemon probed at start and parsed the fake device: the dump is what the probe was given
    const spec = await d.cliJson(['actor', 'cmd', '/dms/node/hardware/spec'])
    expect(spec.gpus).toMatchObject([{ model: 'Fake GPU' }])
    const text = await readFile(dump, 'utf8')
    expect(text).not.toContain(PASSPHRASE)
    const names = text.trim().split('\n').map(l => l.slice(0, l.indexOf('=')))
    expect(names.filter(n => n.startsWith('DMS_'))).toEqual([])
    expect(names).not.toContain('SOME_API_TOKEN')
    expect(text).toContain(`PATH=${PATH}\n`)
    expect(text).toContain('LC_ALL=C\n')
  })
})

describe('one data dir: one setup at a time, one daemon, one passphrase (issue 12, items 14 and 15)', () => {
  const dirs: string[] = []
  const daemons: Array<Daemon | undefined> = []
  afterAll(async () => { await cleanup(daemons, dirs) })
  const fresh = async (): Promise<string> => { const d = join(await tempDir(), 'data'); dirs.push(join(d, '..')); return d }
  const roots = async (dataDir: string): Promise<string[]> => JSON.parse(await readFile(join(dataDir, 'caps', 'dms.json'), 'utf8')).roots

  it('four `dms init` at once on a fresh dir make exactly one user key, the only root', async () => {
    const dataDir = await fresh()
    const runs = await Promise.all(Array.from({ length: 4 }, async () => await dms(['init', '--data-dir', dataDir])))
    for (const r of runs) expect(r.code, r.stderr).toBe(0)
    const out = runs.map(r => JSON.parse(r.stdout) as { user: string, dms: string, created: string[] })
    const keys = await dmsJson(['key', 'list', '--data-dir', dataDir])
    const user = keys.keys.find((k: { context: string }) => k.context === 'user').did
    const node = keys.keys.find((k: { context: string }) => k.context === 'dms').did
    // every process reports the key that is on disk: none made one that was then replaced
    expect(out.map(o => o.user)).toEqual([user, user, user, user])
    expect(out.map(o => o.dms)).toEqual([node, node, node, node])
    expect(out.flatMap(o => o.created).sort()).toEqual(['dms', 'user'])
    expect(await roots(dataDir)).toEqual([user])
    expect((await readdir(dataDir)).sort()).toEqual(['caps', 'keys'])
  })

  it('two first `dms run` at once: one daemon runs, the other is refused with Conflict; one user key, the only root', async () => {
    const dataDir = await fresh()
    const both = await Promise.allSettled([startDaemon({ dataDir }), startDaemon({ dataDir })])
    const up = both.flatMap(r => r.status === 'fulfilled' ? [r.value] : [])
    daemons.push(...up)
    expect(up).toHaveLength(1)
    const refused = both.find(r => r.status === 'rejected')
    expect(String((refused as PromiseRejectedResult).reason)).toMatch(/"msg":"Conflict: /)
    const user = (await dms(['key', 'did', '--data-dir', dataDir])).stdout.trim()
    expect(await roots(dataDir)).toEqual([user])
    expect((await up[0].cliJson(['actor', 'cmd', '/public/status'])).status).toBe('running')
  })

  it('a second `dms run` on a running daemon\'s dir is refused (Conflict) and the daemon keeps serving; a kill -9 does not leave the dir locked', async () => {
    const dataDir = await fresh()
    const d = await startDaemon({ dataDir })
    daemons.push(d)
    const lock = JSON.parse(await readFile(join(dataDir, 'lock'), 'utf8'))
    expect(lock).toMatchObject({ pid: d.info.pid, purpose: 'run' })
    const second = await dms(['run', '--data-dir', dataDir, '--api-port', '0', '--no-mdns', '--listen', '/ip4/127.0.0.1/tcp/0'])
    expect(second.code).toBe(1)
    expect(second.stderr).toMatch(/^Conflict: /)
    expect((await d.cliJson(['actor', 'cmd', '/public/status'])).status).toBe('running')
    // kill -9: the lock file stays, naming a dead pid; the next run takes it over
    await d.kill9()
    expect(JSON.parse(await readFile(join(dataDir, 'lock'), 'utf8')).pid).toBe(d.info.pid)
    const again = await startDaemon({ dataDir })
    daemons.push(again)
    expect(again.info.peerId).toBe(d.info.peerId)
    expect(JSON.parse(await readFile(join(dataDir, 'lock'), 'utf8')).pid).toBe(again.info.pid)
    // a graceful stop removes it
    expect(await again.stop(), tail(again.logs)).toBe(0)
    await expect(readFile(join(dataDir, 'lock'), 'utf8')).rejects.toMatchObject({ code: 'ENOENT' })
  })

  it('`dms init` and `dms key new` refuse a passphrase other than the data dir\'s (WrongPassphrase)', async () => {
    const dataDir = await fresh()
    const first = await dmsJson(['init', '--data-dir', dataDir])
    const other = { env: { DMS_PASSPHRASE: 'not-the-data-dir-passphrase' } }
    const init = await dms(['init', '--data-dir', dataDir], other)
    expect(init.code).toBe(1)
    expect(init.stderr).toMatch(/^WrongPassphrase: /)
    const key = await dms(['key', 'new', 'ops', '--data-dir', dataDir], other)
    expect(key.code).toBe(1)
    expect(key.stderr).toMatch(/^WrongPassphrase: /)
    const capNew = await dms(['cap', 'new', 'guest', '--data-dir', dataDir], other)
    expect(capNew.stderr).toMatch(/^WrongPassphrase: /)
    // nothing was created or changed by the refused calls
    expect((await dmsJson(['key', 'list', '--data-dir', dataDir])).keys.map((k: { context: string }) => k.context)).toEqual(['dms', 'user'])
    expect(await roots(dataDir)).toEqual([first.user])
    // the data dir's passphrase works as before
    expect((await dmsJson(['init', '--data-dir', dataDir])).created).toEqual([])
    expect((await dmsJson(['key', 'new', 'ops', '--data-dir', dataDir])).did).toMatch(/^did:key:z6Mk/)
  })
})
