import { spawn, spawnSync } from 'node:child_process'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BIN, PASSPHRASE, cleanup, dms, startDaemon, tempDir, type CliResult, type Daemon } from './harness.js'

const LOCAL = ['--listen', '/ip4/127.0.0.1/tcp/0', '--api-port', '0', '--no-mdns']

/** Stops a detached daemon a test started (by its pid, if `dms stop` could not). */
async function stopDetached (dataDir: string): Promise<void> {
  const r = await dms(['stop', '--data-dir', dataDir, '--timeout', '10s'])
  if (r.code === 0) return
  try {
    const { pid } = JSON.parse(await readFile(join(dataDir, 'daemon.json'), 'utf8')) as { pid: number }
    process.kill(pid, 'SIGKILL')
  } catch {}
}

/**
 * The `dms` command as operators expect it (issue 9), each item through the CLI against a real
 * daemon in a separate process.
 */

function refusedAs (r: CliResult, name: string, text?: RegExp): void {
  expect(r.stderr.split('\n')[0]).toMatch(new RegExp(`^${name}: `))
  if (text !== undefined) expect(r.stderr).toMatch(text)
  expect(r.code).toBe(1)
}

describe('dms CLI usability (issue 9)', () => {
  let d: Daemon
  const dirs: string[] = []
  const detached: string[] = []

  beforeAll(async () => { d = await startDaemon() })
  afterAll(async () => {
    await Promise.all(detached.map(stopDetached))
    await cleanup([d], dirs)
  })

  const newDir = async (): Promise<string> => { const x = await tempDir(); dirs.push(x); return x }

  it('1: a bare number in a duration flag is refused with a hint', async () => {
    const user = (await d.cli(['key', 'did'])).stdout.trim()
    const [grant, ttl, timeout, ok] = await Promise.all([
      d.cli(['cap', 'grant', user, '--cap', '/dms/node/peers/list', '--duration', '3600']),
      d.cli(['node', 'resources', 'reserve', 'r1', '--ttl', '60']),
      d.cli(['node', 'status', '--timeout', '5']),
      d.cli(['actor', 'cmd', '/public/status', '--timeout', '5s'])
    ])
    refusedAs(grant, 'InvalidArgument', /--duration 3600 needs a unit, e\.g\. 3600s/)
    refusedAs(ttl, 'InvalidArgument', /--ttl 60 needs a unit/)
    refusedAs(timeout, 'InvalidArgument', /--timeout 5 needs a unit/)
    expect(ok.code).toBe(0)
  })

  it('2: a size needs a unit; refusals show sizes in units', async () => {
    const [bare, huge] = await Promise.all([
      d.cli(['onboard', '--cpu', '1', '--ram', '1.5', '--disk', '1GiB']),
      d.cli(['onboard', '--cpu', '1', '--ram', '1000TiB', '--disk', '1GiB'])
    ])
    refusedAs(bare, 'InvalidArgument', /--ram 1\.5 needs a unit, e\.g\. 1\.5GiB/)
    refusedAs(huge, 'InsufficientResources', /1000 TiB asked, the machine has [\d.]+ (GiB|MiB|TiB)/)
    // nothing was onboarded by either
    expect((await d.cliJson(['onboard', 'status'])).onboarded).toBe(false)
  })

  it('5: run --detach returns when ready; wait and stop; a stale daemon.json is detected', async () => {
    const dir = await newDir()
    detached.push(dir)
    const started = await dms(['run', '--detach', '--data-dir', dir, ...LOCAL])
    expect(started.code).toBe(0)
    const info = JSON.parse(started.stdout)
    expect(info).toMatchObject({ pid: expect.any(Number), api: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/), log: join(dir, 'daemon.log') })
    // it is ready when --detach returns: no wait loop needed
    expect(await dms(['status', '--data-dir', dir])).toMatchObject({ code: 0 })
    expect(JSON.parse((await dms(['wait', '--data-dir', dir, '--timeout', '5s'])).stdout)).toMatchObject({ ready: true, pid: info.pid })
    expect(await readFile(join(dir, 'daemon.log'), 'utf8')).toContain('dms node ready')

    const stopped = await dms(['stop', '--data-dir', dir])
    expect(stopped.code).toBe(0)
    expect(JSON.parse(stopped.stdout)).toEqual({ stopped: true, pid: info.pid })
    expect(() => process.kill(info.pid, 0)).toThrow()
    refusedAs(await dms(['stop', '--data-dir', dir]), 'NotRunning')

    // a daemon.json left by a dead process (as after kill -9) is not a running daemon anywhere
    await writeFile(join(dir, 'daemon.json'), JSON.stringify({ ...info, pid: 2 ** 22 + 1 }))
    const [status, wait, call] = await Promise.all([
      dms(['status', '--data-dir', dir]),
      dms(['wait', '--data-dir', dir, '--timeout', '1s']),
      dms(['peers', '--data-dir', dir])
    ])
    expect(status.code).toBe(1)
    expect(JSON.parse(status.stdout)).toMatchObject({ running: false, note: expect.stringMatching(/not running/) })
    refusedAs(wait, 'Timeout', /no daemon became ready .* within 1s/)
    refusedAs(call, 'NotRunning')
  })

  it('5: run --detach exits non-zero with the daemon\'s own error when it fails to start', async () => {
    const dir = await newDir()
    const port = new URL(d.info.api).port
    const r = await dms(['run', '--detach', '--data-dir', dir, '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', '--api-port', port])
    expect(r.code).toBe(1)
    expect(r.stderr.split('\n')[0]).toMatch(new RegExp(`^InvalidConfig: the API port ${port} on 127\\.0\\.0\\.1 is in use.*--api-port`))
    expect(r.stderr).toContain(join(dir, 'daemon.log'))
  })

  it('6: status, version, peers list|self|ping|connect, node state and node labels read', async () => {
    const other = await startDaemon()
    try {
      const [status, version, self, state, labels] = await Promise.all([
        d.cliJson(['status']),
        d.cliJson(['version']),
        d.cliJson(['peers', 'self']),
        d.cliJson(['node', 'state']),
        d.cli(['node', 'label', 'set', 'zone=eu']).then(async () => await d.cliJson(['node', 'labels']))
      ])
      expect(status).toMatchObject({
        running: true, version: expect.any(String), uptimeS: expect.any(Number), pid: d.info.pid, peerId: d.info.peerId, did: d.info.did,
        state: 'ready', peers: { known: expect.any(Number), connected: expect.any(Number) },
        resources: expect.objectContaining({ free: expect.any(Object) }), allocations: { total: 0, running: 0 }
      })
      expect(Date.parse(status.startedAt)).toBeLessThanOrEqual(Date.now())
      expect(version).toEqual({ cli: status.version, daemon: status.version })
      expect(self).toMatchObject({ id: d.info.peerId, did: d.info.did })
      expect(state).toEqual({ state: 'ready', since: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) })
      expect(labels).toEqual({ labels: { zone: 'eu' } })

      // status and version need no key: no passphrase at all
      const noKey = { env: { DMS_PASSPHRASE: undefined } }
      const [anonStatus, anonVersion] = await Promise.all([d.cliJson(['status'], noKey), d.cliJson(['version'], noKey)])
      expect(anonStatus).toMatchObject({ running: true, peerId: d.info.peerId, note: expect.stringMatching(/DMS_PASSPHRASE/) })
      expect(anonStatus.state).toBeUndefined()
      expect(anonVersion.daemon).toBe(status.version)

      const connected = await d.cliJson(['peers', 'connect', other.info.addrs[0]])
      expect(connected).toEqual({ id: other.info.peerId, connected: true })
      const [byId, byDid, list] = await Promise.all([
        d.cliJson(['peers', 'ping', other.info.peerId]),
        d.cliJson(['peers', 'ping', other.info.did]),
        d.cliJson(['peers'])
      ])
      expect(byId.rttMs).toBeGreaterThanOrEqual(0)
      expect(byDid.rttMs).toBeGreaterThanOrEqual(0)
      expect(list.peers).toContainEqual(expect.objectContaining({ id: other.info.peerId, connected: true }))
      expect((await d.cliJson(['status'])).peers.connected).toBeGreaterThanOrEqual(1)
    } finally {
      await cleanup([other])
    }
  })

  it('8: a data dir that is a file, a busy listen port: one line naming what to change', async () => {
    const dir = await newDir()
    const file = join(dir, 'a-file')
    await writeFile(file, '')
    const port = d.info.addrs[0].split('/')[4]
    const [asFile, busyListen] = await Promise.all([
      dms(['run', '--data-dir', file, ...LOCAL]),
      dms(['run', '--data-dir', join(dir, 'b'), '--listen', `/ip4/127.0.0.1/tcp/${port}`, '--api-port', '0', '--no-mdns'])
    ])
    refusedAs(asFile, 'InvalidArgument', new RegExp(`--data-dir ${file} is a file, not a directory`))
    // the foreground daemon logged its start before it failed: the failure is its last line
    expect(busyListen.code).toBe(1)
    expect(busyListen.stderr.trim().split('\n').at(-1)).toMatch(new RegExp(`^InvalidConfig: cannot listen on /ip4/127.0.0.1/tcp/${port}: the address is in use.*--listen`))
    // one line, no stack trace
    expect(asFile.stderr.trim().split('\n')).toHaveLength(1)
    expect(busyListen.stderr.split('\n').filter(l => /^\s+at /.test(l))).toEqual([])
  })

  it('7: a data dir that does not exist is an error, except for init and run', async () => {
    const dir = await newDir()
    const missing = join(dir, 'typo')
    const [list, did] = await Promise.all([dms(['key', 'list', '--data-dir', missing]), dms(['status', '--data-dir', missing])])
    refusedAs(list, 'NotFound', new RegExp(`no data dir ${missing}`))
    refusedAs(did, 'NotFound')
    expect((await dms(['init', '--data-dir', missing])).code).toBe(0)
    expect((await dms(['key', 'list', '--data-dir', missing])).code).toBe(0)
  })

  it('7: an unknown field in --data is a BadRequest naming it; an unknown behaviour suggests the nearest path', async () => {
    const [typo, unknown, ok] = await Promise.all([
      d.cli(['actor', 'cmd', '/dms/node/peers/ping', '--data', JSON.stringify({ peer: d.info.peerId, timout: 5 })]),
      d.cli(['actor', 'cmd', '/dms/node/peers/lst']),
      d.cli(['actor', 'cmd', '/dms/node/peers/list', '--data', '{}'])
    ])
    refusedAs(typo, 'BadRequest', /timout/)
    refusedAs(unknown, 'UnknownBehavior', /did you mean \/dms\/node\/peers\/list\?/)
    expect(ok.code).toBe(0)
  })

  it('4: dms run confirms a first-run passphrase, saying "create"; Ctrl-C at a prompt exits 130 on a new line', async () => {
    const dir = await newDir()
    // a terminal from util-linux `script`: the prompts only appear on a TTY
    const mismatch = await onTerminal(['run', '--data-dir', join(dir, 'new'), ...LOCAL], [['Passphrase to create', 'one\r'], ['Repeat the passphrase', 'two\r']])
    expect(mismatch.output).toMatch(/Passphrase to create the node keys in \S+new: /)
    expect(mismatch.output).toMatch(/NoPassphrase: the two passphrases differ/)
    expect(mismatch.code).toBe(1)

    const interrupted = await onTerminal(['init', '--data-dir', join(dir, 'init')], [['Passphrase to', '\u0003']])
    expect(interrupted.code).toBe(130)
    expect(interrupted.output).toMatch(/Passphrase to protect the keys: \r?\n$/)
  })

  it('output: tables and colour on a terminal, never with NO_COLOR; JSON when piped or with --json; ISO times', async () => {
    const keys = ['key', 'list', '--data-dir', d.dataDir]
    const [tty, noColor, json, piped, state] = await Promise.all([
      onTerminal(keys, []),
      onTerminal(keys, [], { NO_COLOR: '1' }),
      onTerminal([...keys, '--json'], []),
      d.cliJson(['key', 'list']),
      d.cliJson(['node', 'state'])
    ])
    expect(tty.code).toBe(0)
    expect(tty.output).toMatch(/\u001b\[1mCONTEXT +DID\u001b\[0m\r?\ndms +did:key:/)
    expect(noColor.output).toMatch(/^CONTEXT +DID\r?\ndms +did:key:/)
    expect(noColor.output).not.toContain('\u001b[')
    expect(JSON.parse(json.output)).toEqual(piped)
    expect(piped.keys.map((k: { context: string }) => k.context)).toEqual(['dms', 'user'])
    // a Unix-ms time of a reply is shown as ISO-8601
    expect(new Date(state.since).toISOString()).toBe(state.since)
  })

  it('help: examples and environment at the top, what a command needs on each; completion for bash, zsh, fish', async () => {
    const [top, peers, bash, zsh, fish, bad] = await Promise.all([
      dms(['--help']), dms(['peers', 'list', '--help']),
      dms(['completion', 'bash']), dms(['completion', 'zsh']), dms(['completion', 'fish']), dms(['completion', 'tcsh'])
    ])
    expect(top.stdout).toMatch(/Examples:\n {2}dms run --detach/)
    expect(top.stdout).toMatch(/Environment:[\s\S]*DMS_PASSPHRASE/)
    expect(peers.stdout).toMatch(/Needs: the running daemon/)
    expect(zsh.stdout).toContain('bashcompinit')
    expect(fish.stdout).toContain("complete -c dms -n '__fish_seen_subcommand_from peers' -a 'list self ping connect'")
    refusedAs(bad, 'InvalidArgument')
    // the bash script completes as bash would call it
    const complete = (line: string): string => {
      const words = line.split(' ')
      const r = spawnSync('bash', ['-c', `${bash.stdout}\nCOMP_WORDS=(${words.map(w => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _dms; echo "\${COMPREPLY[@]}"`], { encoding: 'utf8' })
      return r.stdout.trim()
    }
    expect(complete('dms pe')).toBe('peers')
    expect(complete('dms peers p')).toBe('ping')
    expect(complete('dms run --de')).toBe('--detach')
  })

  it('3: unlock makes a 0600 session key the user key delegates to; commands need no passphrase while it lasts; lock revokes and deletes it', async () => {
    const noKey = { env: { DMS_PASSPHRASE: undefined } }
    refusedAs(await d.cli(['peers'], noKey), 'NoPassphrase')
    refusedAs(await d.cli(['unlock', '--for', '3600']), 'InvalidArgument', /--for 3600 needs a unit/)
    const before = Date.now()
    const unlocked = await d.cliJson(['unlock', '--for', '1h'])
    const file = join(d.dataDir, 'sessions', 'user.json')
    expect(unlocked).toMatchObject({ context: 'user', did: expect.stringMatching(/^did:key:z6Mk/), path: file })
    expect(Math.abs(Date.parse(unlocked.expiry) - (before + 3_600_000))).toBeLessThan(60_000)
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    const saved = await readFile(file, 'utf8')
    // the session holds a token from the user to the session key, expiring with it; no passphrase kept
    const session = JSON.parse(saved)
    expect(session.token.split('.').length).toBe(3)
    expect(saved).not.toContain(PASSPHRASE)
    const claims = JSON.parse(Buffer.from(session.token.split('.')[1], 'base64url').toString())
    expect(claims).toMatchObject({ iss: (await d.cli(['key', 'did'])).stdout.trim(), aud: unlocked.did, exp: Date.parse(unlocked.expiry) / 1000 })

    const [peers, status] = await Promise.all([d.cliJson(['peers'], noKey), d.cliJson(['status'], noKey)])
    expect(peers).toEqual({ peers: expect.any(Array) })
    expect(status.state).toBe('ready')

    const locked = await d.cliJson(['lock'])
    expect(locked).toEqual({ locked: true, context: 'user', session: true, revoked: 'spread' })
    await expect(stat(file)).rejects.toThrow()
    refusedAs(await d.cli(['peers'], noKey), 'NoPassphrase')
    // a copy of the session key kept from before the lock no longer works: its token is revoked
    await writeFile(file, saved, { mode: 0o600 })
    refusedAs(await d.cli(['peers'], noKey), 'Unauthorized')
    expect(await d.cliJson(['lock'], noKey)).toMatchObject({ session: true, revoked: 'node' })
    await expect(stat(file)).rejects.toThrow()
  })
})

/**
 * Runs `dms <args>` on a pseudo-terminal (`script -qec`), without DMS_PASSPHRASE, answering each
 * prompt (text awaited in the output) with its input. Bounded by `timeoutMs`.
 */
async function onTerminal (args: string[], answers: Array<[string, string]>, extraEnv: Record<string, string> = {}, timeoutMs = 30_000): Promise<{ code: number, output: string }> {
  const quote = (a: string): string => `'${a.replace(/'/g, "'\\''")}'`
  const env: Record<string, string | undefined> = { ...process.env, TERM: 'dumb', ...extraEnv }
  delete env.NO_COLOR
  if (extraEnv.NO_COLOR !== undefined) env.NO_COLOR = extraEnv.NO_COLOR
  delete env.DMS_PASSPHRASE
  const child = spawn('script', ['-qec', [process.execPath, BIN, ...args].map(quote).join(' '), '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'] })
  let output = ''
  let next = 0
  const onData = (b: Buffer): void => {
    output += b.toString()
    while (next < answers.length && output.includes(answers[next][0])) child.stdin.write(answers[next++][1])
  }
  child.stdout.on('data', onData)
  child.stderr.on('data', onData)
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const code = await new Promise<number>(resolve => child.on('exit', c => { resolve(c ?? -1) }))
  clearTimeout(timer)
  return { code, output }
}

