import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { newIdentity } from '../../src/identity/identity.js'
import { cleanup, dms, dmsJson, eventually, startDaemon, tempDir, type Daemon } from './harness.js'

/**
 * The foundation through its public surface: the `dms` CLI driving daemons in separate processes
 * on loopback. A and B bootstrap to each other; C bootstraps to B only, so A learns of C only
 * through hello.
 */
describe('dms foundation (CLI + daemons)', () => {
  let a: Daemon, b: Daemon, c: Daemon | undefined
  const dirs: string[] = []

  beforeAll(async () => {
    a = await startDaemon()
    b = await startDaemon({ args: ['--bootstrap', a.info.addrs[0]] })
  })
  afterAll(async () => { await cleanup([a, b, c], dirs) })

  it('init is idempotent and creates both keys, the user a root of the node', async () => {
    const dir = await tempDir()
    dirs.push(dir)
    const first = await dmsJson(['init', '--data-dir', dir])
    expect(first.created).toEqual(['dms', 'user'])
    const again = await dmsJson(['init', '--data-dir', dir])
    expect(again.created).toEqual([])
    expect(again.user).toBe(first.user)
    const keys = await dmsJson(['key', 'list', '--data-dir', dir])
    expect(keys.keys.map((k: { context: string }) => k.context)).toEqual(['dms', 'user'])
    const did = await dms(['key', 'did', '--data-dir', dir])
    expect(did.stdout.trim()).toBe(first.user)
    const anchors = JSON.parse(await readFile(join(dir, 'caps', 'dms.json'), 'utf8'))
    expect(anchors.roots).toContain(first.user)
    const created = await dmsJson(['key', 'new', 'ops', '--data-dir', dir])
    expect(created.did).toMatch(/^did:key:z6Mk/)
    expect((await dms(['key', 'new', 'ops', '--data-dir', dir])).stderr).toMatch(/^KeyExists: /)
  })

  it('writes daemon.json with peerId, did, addrs (with /p2p/), a loopback API and the pid', async () => {
    expect(a.info.addrs.every(x => x.endsWith(`/p2p/${a.info.peerId}`))).toBe(true)
    expect(a.info.api).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    expect(a.info.pid).toBe(a.proc.pid)
    expect(a.info.did).toMatch(/^did:key:z/)
  })

  it('daemons run on the Node that runs the tests, and say which in their ready line', () => {
    // CI runs this suite on Node 20 and on Node 24 with that Node first on PATH; the harness
    // starts daemons with process.execPath, and this proves they really ran on it.
    const ready = a.logs.find(l => l.msg === 'dms node ready')
    expect(ready?.node).toBe(process.version)
  })

  it('peers/self answers with the node identity', async () => {
    const self = await a.cliJson(['actor', 'cmd', '/dms/node/peers/self'])
    expect(self).toEqual({ id: a.info.peerId, did: a.info.did, addrs: expect.arrayContaining([a.info.addrs[0]]) })
  })

  it('public/status answers locally and on another node', async () => {
    const local = await a.cliJson(['actor', 'cmd', '/public/status'])
    expect(local).toMatchObject({ status: 'running', version: expect.any(String), uptimeS: expect.any(Number) })
    const remote = await a.cliJson(['actor', 'cmd', '/public/status', '--dest', b.info.peerId])
    expect(remote.status).toBe('running')
    const byDid = await a.cliJson(['actor', 'cmd', '/public/hello', '--dest', b.info.did])
    expect(byDid).toEqual({ did: b.info.did, peerId: b.info.peerId })
  })

  it('peers/list shows the other node with its DID, learned from hello, within 10 s', async () => {
    const peer = await eventually(async () => {
      const { peers } = await a.cliJson(['actor', 'cmd', '/dms/node/peers/list'])
      return peers.find((p: { id: string, did?: string }) => p.id === b.info.peerId && p.did === b.info.did)
    }, 10_000)
    expect(peer).toMatchObject({ connected: true, addrs: expect.any(Array), lastHelloAt: expect.any(String) })
  })

  it('peers/ping measures a round trip, and refuses to ping itself', async () => {
    const r = await a.cliJson(['actor', 'cmd', '/dms/node/peers/ping', '--data', JSON.stringify({ peer: b.info.peerId })])
    expect(r).toEqual({ rttMs: expect.any(Number) })
    // The figure comes from an exchange with the peer: one no one knows gets a typed refusal instead.
    const nobody = (await newIdentity()).peerId
    const none = await a.cli(['actor', 'cmd', '/dms/node/peers/ping', '--data', JSON.stringify({ peer: nobody }), '--timeout', '20s'])
    expect(none.code).toBe(1)
    expect(none.stderr).toMatch(/^(Unreachable|Timeout): /)
    const self = await a.cli(['actor', 'cmd', '/dms/node/peers/ping', '--data', JSON.stringify({ peer: a.info.peerId })])
    expect(self.code).toBe(1)
    expect(self.stderr).toMatch(/^BadRequest: /)
  })

  it('peers/dht and peers/score answer', async () => {
    const dht = await a.cliJson(['actor', 'cmd', '/dms/node/peers/dht'])
    expect(dht).toMatchObject({ mode: expect.stringMatching(/^(server|client)$/), peers: expect.any(Array) })
    const score = await a.cliJson(['actor', 'cmd', '/dms/node/peers/score'])
    expect(score).toHaveProperty('scores')
  })

  it('answers refusals at once with typed errors on stderr and exit 1', async () => {
    // Each call allows 60 s. A refusal that was dropped instead of answered would end as
    // `Timeout` at that deadline (and run past this test's own timeout): the typed names below
    // can only come from the daemon's replies.
    const unauthorized = await a.cli(['actor', 'cmd', '/dms/node/peers/list', '--dest', b.info.peerId, '--timeout', '60s'])
    expect(unauthorized.code).toBe(1)
    expect(unauthorized.stderr).toMatch(/^Unauthorized: /)
    const unknown = await a.cli(['actor', 'cmd', '/dms/no/such/behavior', '--timeout', '60s'])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toMatch(/^UnknownBehavior: /)
    const bad = await a.cli(['actor', 'cmd', '/dms/node/peers/ping', '--data', '{"peer": 42}', '--timeout', '60s'])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/^BadRequest: /)
    const notJson = await a.cli(['actor', 'cmd', '/public/status', '--data', '{nope'])
    expect(notJson.stderr).toMatch(/^InvalidArgument: /)
    // and the daemon still serves
    expect((await a.cliJson(['actor', 'cmd', '/public/status'])).status).toBe('running')
  })

  it('raw envelopes: actor invoke signs and relays an envelope given as JSON', async () => {
    const r = await a.cliJson(['actor', 'invoke', '--envelope', JSON.stringify({ be: '/public/hello', to: b.info.peerId })])
    expect(r.reply).toEqual({ did: b.info.did, peerId: b.info.peerId })
    expect(r.from.id).toBe(b.info.did)
    const sent = await a.cliJson(['actor', 'send', '--envelope', JSON.stringify({ be: '/public/status' })])
    expect(sent).toEqual({ sent: true })
  })

  it('a node learns of a node it never bootstrapped to through hello, and can invoke it', async () => {
    c = await startDaemon({ args: ['--bootstrap', b.info.addrs[0]] })
    await eventually(async () => {
      const { peers } = await a.cliJson(['actor', 'cmd', '/dms/node/peers/list'])
      return peers.some((p: { id: string, did?: string }) => p.id === c!.info.peerId && p.did === c!.info.did)
    }, 10_000)
    const hello = await a.cliJson(['actor', 'cmd', '/public/hello', '--dest', c.info.did])
    expect(hello.peerId).toBe(c.info.peerId)
  })

  it('peers/connect dials an address', async () => {
    const lone = await startDaemon()
    try {
      const r = await a.cliJson(['actor', 'cmd', '/dms/node/peers/connect', '--data', JSON.stringify({ address: lone.info.addrs[0] })])
      expect(r).toEqual({ id: lone.info.peerId, connected: true })
    } finally { await cleanup([lone]) }
  })

  it('actor cmd --help lists the behaviours with their request fields', async () => {
    const help = await dms(['actor', 'cmd', '--help'])
    expect(help.stdout).toContain('/dms/node/peers/ping  peer: string')
    expect(help.stdout).toContain('/public/status')
  })

  it('stops gracefully on SIGTERM (every part stopped, files removed, exit 0) and a restart keeps identity and peer book', async () => {
    const before = a.info
    // 'close' comes after the exit and the end of the daemon's output: every log line is in.
    const closed = new Promise<void>(resolve => a.proc.once('close', () => { resolve() }))
    expect(await a.stop()).toBe(0)
    await closed
    const said = a.logs.map(l => l.msg)
    // exit 0 alone would not tell: a stop that hangs is cut short at its deadline with exit 0 too
    expect(said).toContain('stopping')
    expect(said.slice(said.indexOf('stopping'))).toContain('stopped')
    expect(said).not.toContain('stop took too long; exiting anyway')
    await expect(stat(join(a.dataDir, 'daemon.json'))).rejects.toMatchObject({ code: 'ENOENT' })
    await expect(stat(join(a.dataDir, 'lock'))).rejects.toMatchObject({ code: 'ENOENT' })
    a = await startDaemon({ dataDir: a.dataDir })
    expect(a.info.peerId).toBe(before.peerId)
    expect(a.info.did).toBe(before.did)
    const { peers } = await a.cliJson(['actor', 'cmd', '/dms/node/peers/list'])
    expect(peers.find((p: { id: string }) => p.id === b.info.peerId)).toMatchObject({ did: b.info.did })
  })

  it('a wrong passphrase gives one clear line, not a stack trace', async () => {
    const r = await dms(['run', '--data-dir', a.dataDir, '--api-port', '0'], { env: { DMS_PASSPHRASE: 'not-the-passphrase' } })
    // the running daemon holds the data dir: `run` must refuse before touching keys
    expect(r.code).toBe(1)
    const dir = await tempDir()
    dirs.push(dir)
    await dmsJson(['init', '--data-dir', dir])
    const wrong = await dms(['run', '--data-dir', dir, '--api-port', '0', '--no-mdns', '--listen', '/ip4/127.0.0.1/tcp/0'], { env: { DMS_PASSPHRASE: 'wrong' } })
    expect(wrong.code).toBe(1)
    expect(wrong.stderr.trim().split('\n')).toHaveLength(1)
    expect(wrong.stderr).toMatch(/^WrongPassphrase: /)
    const cmd = await a.cli(['actor', 'cmd', '/public/status'], { env: { DMS_PASSPHRASE: 'wrong' } })
    expect(cmd.stderr.trim()).toMatch(/^WrongPassphrase: [^\n]+$/)
  })

  it('refuses an unknown config key by name, and reports a daemon that is not running', async () => {
    const dir = await tempDir()
    dirs.push(dir)
    await writeFile(join(dir, 'config.json'), JSON.stringify({ apiPort: 0, lisen: ['/ip4/127.0.0.1/tcp/0'] }))
    const r = await dms(['run', '--data-dir', dir])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^InvalidConfig: .*'lisen'/)
    const none = await dms(['actor', 'cmd', '/public/status', '--data-dir', dir])
    expect(none.code).toBe(1)
    expect(none.stderr).toMatch(/^NotRunning: /)
  })
})
