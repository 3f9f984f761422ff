import { spawn } from 'node:child_process'
import { mkdir, open, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Command } from 'commander'
import { ApiClient, readDaemonInfo, type DaemonInfo } from '../../api/client.js'
import { Keystore } from '../../identity/keystore.js'
import { getPassphrase } from '../../identity/passphrase.js'
import { InvalidArgument, NotFound, Timeout, isDmsError } from '../../lib/errors.js'
import { formatDuration, formatSize, parseDuration } from '../../lib/units.js'
import { VERSION } from '../../node/version.js'
import { callBehavior, openAnonymousSession, openSession, type Session } from '../call.js'
import { readSession } from '../session.js'
import { progress } from '../progress.js'
import { bold, dim, emit, globalsFrom, green, red, table, withOutput, type CliGlobals, type OutputOpts } from '../common.js'

interface DirOpts extends OutputOpts { dataDir?: string, timeout?: string, context?: string }

/** The detached daemon's log, in its data dir (appended across starts). */
export const DAEMON_LOG = 'daemon.log'
/** How often `wait` and `stop` look again: no event crosses processes for these. */
const POLL_MS = 200

/**
 * The passphrase `dms run` needs: on a first run it creates the keys, so it is asked twice (as
 * `dms init` does) and the prompt says so.
 */
export async function daemonPassphrase (dataDir: string): Promise<string> {
  const ks = new Keystore(dataDir)
  const creating = !await ks.exists('dms').catch(() => false)
  return creating
    ? await getPassphrase(`create the node keys in ${dataDir}`, { confirm: process.env.DMS_PASSPHRASE === undefined })
    : await getPassphrase('unlock the node keys')
}

/** Creates the data dir; a path that is a file is one line naming it, not `EEXIST`. */
export async function ensureDataDir (dataDir: string): Promise<void> {
  try {
    await mkdir(dataDir, { recursive: true, mode: 0o700 })
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EEXIST' || code === 'ENOTDIR') throw new InvalidArgument(`--data-dir ${dataDir} is a file, not a directory: choose another --data-dir (or $DMS_HOME)`, { field: 'data-dir', path: dataDir })
    if (code === 'EACCES') throw new InvalidArgument(`--data-dir ${dataDir} cannot be created here (permission denied): choose another --data-dir`, { field: 'data-dir', path: dataDir })
    throw err
  }
}

/**
 * `dms run --detach`: starts the daemon as a child with its output in `<data-dir>/daemon.log`,
 * and returns once it is ready (it says so over an IPC channel), or fails with the daemon's own
 * error line when it exits first. Bounded by `timeoutMs`.
 */
export async function runDetached (dataDir: string, runArgs: string[], o: OutputOpts & { timeout?: string }): Promise<void> {
  const timeoutMs = parseDuration(o.timeout ?? '60s', '--timeout')
  await ensureDataDir(dataDir)
  const passphrase = await daemonPassphrase(dataDir)
  const logPath = join(dataDir, DAEMON_LOG)
  const log = await open(logPath, 'a', 0o600)
  const start = (await log.stat()).size
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1], 'run', ...runArgs], {
    detached: true,
    stdio: ['ignore', log.fd, log.fd, 'ipc'],
    // the daemon reads it once at start; it is not written anywhere
    env: { ...process.env, DMS_PASSPHRASE: passphrase, DMS_LOG_FORMAT: 'json' }
  })
  await log.close()
  const p = progress(process.stderr, { terminalOnly: true })
  p.step(`starting the daemon (log: ${logPath})`)
  const outcome = await new Promise<{ ready: DaemonInfo } | { exit: number | null } | { timeout: true }>(resolve => {
    const timer = setTimeout(() => { resolve({ timeout: true }) }, timeoutMs)
    child.on('message', (m: { ready?: DaemonInfo }) => { if (m.ready !== undefined) { clearTimeout(timer); resolve({ ready: m.ready }) } })
    child.on('exit', code => { clearTimeout(timer); resolve({ exit: code }) })
  })
  p.done()
  if ('ready' in outcome) {
    child.disconnect()
    child.unref()
    emit(o, { ...outcome.ready, log: logPath }, v => `${green('daemon ready')}  pid ${v.pid}  api ${v.api}\npeer ${v.peerId}\nlog  ${v.log}`)
    return
  }
  if ('timeout' in outcome) {
    child.kill('SIGTERM')
    throw new Timeout(`the daemon did not become ready within ${formatDuration(timeoutMs)}; it was stopped. Its log: ${logPath}`)
  }
  // the daemon's CLI prints its failure as one `Name: message` line last
  const text = (await readFile(logPath, 'utf8')).slice(start)
  const line = text.split('\n').reverse().find(l => /^[A-Z][A-Za-z]+: /.test(l))
  process.stderr.write(`${line ?? `Error: the daemon exited with code ${outcome.exit}`}\n(log: ${logPath})\n`)
  process.exitCode = outcome.exit === null || outcome.exit === 0 ? 1 : outcome.exit
}

/** Waits until the daemon of `g.dataDir` answers on its API; stale `daemon.json` files do not count. */
async function waitReady (g: CliGlobals, timeoutMs: number): Promise<DaemonInfo> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (let i = 0; i <= Math.ceil(timeoutMs / POLL_MS); i++) {
    try {
      const info = await readDaemonInfo(g.dataDir)
      await new ApiClient(info.api).handle()
      return info
    } catch (err) { last = err }
    if (Date.now() >= deadline) break
    await new Promise(resolve => setTimeout(resolve, POLL_MS))
  }
  const why = last instanceof Error ? `: ${last.message}` : ''
  throw new Timeout(`no daemon became ready on ${g.dataDir} within ${formatDuration(timeoutMs)}${why} (log of a detached daemon: ${join(g.dataDir, DAEMON_LOG)})`)
}

function alive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM' }
}

/** Whether a key can be used without a prompt (a prompt in `dms status` would surprise). */
async function keyAvailable (g: CliGlobals): Promise<boolean> {
  return (process.env.DMS_PASSPHRASE ?? '') !== '' || await readSession(g.dataDir, g.context) !== undefined
}

interface StatusView {
  running: boolean
  dataDir: string
  version?: string
  startedAt?: string
  uptimeS?: number
  pid?: number
  api?: string
  peerId?: string
  did?: string
  addrs?: string[]
  state?: string
  labels?: Record<string, string>
  peers?: { known: number, connected: number }
  resources?: unknown
  allocations?: { total: number, running: number }
  note?: string
}

async function statusOf (g: CliGlobals): Promise<StatusView> {
  let s: Session
  try { s = await openAnonymousSession(g) } catch (err) {
    if (isDmsError(err, 'NotRunning')) return { running: false, dataDir: g.dataDir, note: err.message }
    throw err
  }
  const pub = await callBehavior<{ version: string, uptimeS: number }>(g, '/public/status', {}, { session: s })
  const view: StatusView = {
    running: true,
    dataDir: g.dataDir,
    version: pub.version,
    startedAt: new Date(Date.now() - pub.uptimeS * 1000).toISOString(),
    uptimeS: pub.uptimeS,
    pid: s.daemon.pid,
    api: s.daemon.api,
    peerId: s.daemon.peerId,
    did: s.daemon.did,
    addrs: s.daemon.addrs
  }
  if (!await keyAvailable(g)) return { ...view, note: 'state, peers, resources and allocations need the user key: dms unlock, or set DMS_PASSPHRASE' }
  const signed = await openSession(g)
  const [node, peers] = await Promise.all([
    callBehavior<{ state: string, labels: Record<string, string>, resources: unknown, allocations: { total: number, running: number } }>(g, '/dms/node/status', {}, { session: signed }),
    callBehavior<{ peers: Array<{ connected: boolean }> }>(g, '/dms/node/peers/list', {}, { session: signed })
  ])
  return {
    ...view,
    state: node.state,
    labels: node.labels,
    peers: { known: peers.peers.length, connected: peers.peers.filter(p => p.connected).length },
    resources: node.resources,
    allocations: node.allocations
  }
}

function humanStatus (v: StatusView): string {
  if (!v.running) return `${red('daemon not running')} on ${v.dataDir}\n${dim(v.note ?? '')}`
  const lines = [
    `${green('daemon running')}  ${v.dataDir}`,
    `version    ${v.version}`,
    `uptime     ${formatDuration((v.uptimeS ?? 0) * 1000)} (since ${v.startedAt})`,
    `pid        ${v.pid}   api ${v.api}`,
    `peer id    ${v.peerId}`,
    `did        ${v.did}`
  ]
  if (v.state !== undefined) {
    const r = v.resources as { onboarded: { cpuCores: number, ramBytes: number, diskBytes: number } | null, free: { cpuCores: number, ramBytes: number, diskBytes: number } }
    const vec = (x: { cpuCores: number, ramBytes: number, diskBytes: number }): string => `${x.cpuCores} cores, ${formatSize(x.ramBytes)} RAM, ${formatSize(x.diskBytes)} disk`
    lines.push(
      `state      ${v.state}`,
      `labels     ${Object.entries(v.labels ?? {}).map(([k, x]) => `${k}=${x}`).join(' ') || dim('(none)')}`,
      `peers      ${v.peers?.connected} connected, ${v.peers?.known} known`,
      `onboarded  ${r.onboarded === null ? dim('no') : vec(r.onboarded)}`,
      `free       ${vec(r.free)}`,
      `allocs     ${v.allocations?.running} running, ${v.allocations?.total} in all`)
  }
  if (v.note !== undefined) lines.push(dim(v.note))
  return lines.join('\n')
}

/** `dms wait`, `dms stop`, `dms status`, `dms version`. */
export function register (program: Command): void {
  const dirOption = (cmd: Command): Command => withOutput(cmd.option('--data-dir <dir>', 'data directory (default: $DMS_HOME or ~/.dms)'))

  dirOption(program.command('wait'))
    .description('wait until the daemon of the data dir answers (a stale daemon.json is not ready); exits 1 at the timeout. Needs no key')
    .option('--timeout <duration>', 'how long to wait (e.g. 30s, 2m)', '30s')
    .action(async (o: DirOpts) => {
      const g = globalsFrom(o)
      const p = progress(process.stderr, { terminalOnly: true })
      p.step(`waiting for the daemon of ${g.dataDir}`)
      const info = await waitReady(g, g.timeoutMs).finally(() => { p.done() })
      emit(o, { ready: true, pid: info.pid, api: info.api, peerId: info.peerId }, v => `${green('ready')}  pid ${v.pid}  api ${v.api}`)
    })

  dirOption(program.command('stop'))
    .description('stop the daemon of the data dir (SIGTERM) and wait until it exited. Needs no key')
    .option('--timeout <duration>', 'how long to wait for it to exit (e.g. 10s)', '30s')
    .action(async (o: DirOpts) => {
      const g = globalsFrom(o)
      const info = await readDaemonInfo(g.dataDir)
      process.kill(info.pid, 'SIGTERM')
      const deadline = Date.now() + g.timeoutMs
      for (let i = 0; i <= Math.ceil(g.timeoutMs / POLL_MS) && alive(info.pid); i++) {
        if (Date.now() >= deadline) break
        await new Promise(resolve => setTimeout(resolve, POLL_MS))
      }
      if (alive(info.pid)) throw new Timeout(`the daemon (pid ${info.pid}) still runs after ${formatDuration(g.timeoutMs)}; its log: ${join(g.dataDir, DAEMON_LOG)}`)
      emit(o, { stopped: true, pid: info.pid }, v => `${green('stopped')}  pid ${v.pid}`)
    })

  dirOption(program.command('status'))
    .description('is the daemon up: version, uptime, identity; with the user key (DMS_PASSPHRASE) also state, peers, resources, allocations. Exits 1 when no daemon runs')
    .option('--timeout <duration>', 'deadline for the calls (e.g. 5s)', '30s')
    .action(async (o: DirOpts) => {
      const v = await statusOf(globalsFrom(o))
      emit(o, v, humanStatus)
      if (!v.running) process.exitCode = 1
    })

  dirOption(program.command('version'))
    .description('the version of this dms and of the running daemon (null when none runs). Needs no key')
    .option('--timeout <duration>', 'deadline for asking the daemon (e.g. 5s)', '5s')
    .action(async (o: DirOpts) => {
      const g = globalsFrom(o)
      let daemon: string | null = null
      try {
        daemon = (await callBehavior<{ version: string }>(g, '/public/status', {}, { session: await openAnonymousSession(g) })).version
      } catch (err) { if (!isDmsError(err, 'NotRunning')) throw err }
      emit(o, { cli: VERSION, daemon }, v => `dms ${bold(v.cli)}\ndaemon ${v.daemon ?? dim('not running')}`)
    })
}

/** A data dir that does not exist is an error (`key list --data-dir /typo` printed `[]`). */
export async function assertDataDir (dataDir: string): Promise<void> {
  let isDir: boolean
  try { isDir = (await stat(dataDir)).isDirectory() } catch {
    throw new NotFound(`no data dir ${dataDir}: check --data-dir (or $DMS_HOME), or create it with 'dms init --data-dir ${dataDir}'`, { field: 'data-dir', path: dataDir })
  }
  if (!isDir) throw new InvalidArgument(`--data-dir ${dataDir} is a file, not a directory`, { field: 'data-dir', path: dataDir })
}
