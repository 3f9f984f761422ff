import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import type { DaemonInfo } from '../../src/api/client.js'

/**
 * Drives the real `dms` CLI and daemons in separate processes. Daemons listen on 127.0.0.1 only,
 * with mDNS off (or, with `lan`, on a network namespace's address with mDNS on), API on a free
 * port; readiness is the daemon's own "ready" log line, not a sleep.
 */
export const ROOT = resolve(import.meta.dirname, '../..')
export const BIN = join(ROOT, 'bin/dms.js')
export const PASSPHRASE = 'e2e-test-passphrase'
const READY_TIMEOUT_MS = 30_000

export interface CliResult { code: number, stdout: string, stderr: string }

export async function tempDir (prefix = 'dms-e2e-'): Promise<string> {
  return await mkdtemp(join(tmpdir(), prefix))
}

/** `node <args>`, inside network namespace `netns` when given (test/e2e/netns.ts). */
function nodeCommand (args: string[], netns?: string): [string, string[]] {
  return netns === undefined ? [process.execPath, args] : ['ip', ['netns', 'exec', netns, process.execPath, ...args]]
}

/** Runs `dms <args>`; resolves with exit code and output (bounded by `timeoutMs`). */
export async function dms (args: string[], opts: { env?: Record<string, string | undefined>, input?: string, timeoutMs?: number, netns?: string } = {}): Promise<CliResult> {
  const child = spawn(...nodeCommand([BIN, ...args], opts.netns), {
    cwd: ROOT,
    env: { ...process.env, DMS_PASSPHRASE: PASSPHRASE, DMS_LOG_FORMAT: 'json', ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  child.stdin.end(opts.input ?? '')
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000)
  const code = await new Promise<number>(resolve => child.on('exit', (c, sig) => { resolve(c ?? (sig !== null ? 128 : 1)) }))
  clearTimeout(timer)
  return { code, stdout, stderr }
}

/** `dms <args>` that must succeed; returns stdout parsed as JSON. */
export async function dmsJson<T = any> (args: string[], opts: Parameters<typeof dms>[1] = {}): Promise<T> {
  const r = await dms(args, opts)
  if (r.code !== 0) throw new Error(`dms ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`)
  return JSON.parse(r.stdout) as T
}

export interface Daemon {
  dataDir: string
  info: DaemonInfo
  proc: ChildProcess
  /** Log lines seen so far (JSON objects). */
  logs: Array<Record<string, unknown>>
  /** `dms <args> --data-dir <this daemon's dir>` */
  cli: (args: string[], opts?: Parameters<typeof dms>[1]) => Promise<CliResult>
  cliJson: <T = any>(args: string[], opts?: Parameters<typeof dms>[1]) => Promise<T>
  /** SIGTERM and wait for exit; resolves with the exit code. */
  stop: () => Promise<number>
  kill9: () => Promise<void>
  exited: Promise<number>
}

/**
 * `lan`: run the daemon inside a network namespace of test/e2e/netns.ts, listening on its address,
 * with mDNS as configured (on unless `args` turn it off); its `cli` runs there too.
 */
export async function startDaemon (opts: { dataDir?: string, args?: string[], env?: Record<string, string | undefined>, lan?: { netns: string, ip: string }, readyTimeoutMs?: number } = {}): Promise<Daemon> {
  const readyTimeoutMs = opts.readyTimeoutMs ?? READY_TIMEOUT_MS
  const dataDir = opts.dataDir ?? await tempDir()
  const network = opts.lan === undefined ? ['--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns'] : ['--listen', `/ip4/${opts.lan.ip}/tcp/0`]
  const args = ['run', '--data-dir', dataDir, ...network, '--api-port', '0', ...(opts.args ?? [])]
  const proc = spawn(...nodeCommand([BIN, ...args], opts.lan?.netns), {
    cwd: ROOT,
    env: { ...process.env, DMS_PASSPHRASE: PASSPHRASE, DMS_LOG_FORMAT: 'json', DMS_LOG_LEVEL: 'debug', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const logs: Array<Record<string, unknown>> = []
  const exited = new Promise<number>(resolve => proc.on('exit', (c, sig) => { resolve(c ?? (sig === 'SIGKILL' ? 137 : 1)) }))
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`daemon did not become ready within ${readyTimeoutMs} ms:\n${tail(logs)}`)) }, readyTimeoutMs)
    createInterface({ input: proc.stderr! }).on('line', line => {
      let rec: Record<string, unknown>
      try { rec = JSON.parse(line) } catch { rec = { msg: line } }
      logs.push(rec)
      if (rec.msg === 'dms node ready') { clearTimeout(timer); resolve() }
    })
    void exited.then(code => { clearTimeout(timer); reject(new Error(`daemon exited with ${code} before it was ready:\n${tail(logs)}`)) })
  })
  // The daemon logs to stderr; anything on stdout is kept beside the logs (and the pipe drained,
  // so that a daemon printing there can never block on a full pipe).
  createInterface({ input: proc.stdout! }).on('line', line => { logs.push({ msg: line, stream: 'stdout' }) })
  try {
    await ready
  } catch (err) {
    // A daemon that never became ready must not outlive the caller that gave up on it.
    if (proc.exitCode === null && proc.signalCode === null) { proc.kill('SIGKILL'); await exited }
    throw err
  }
  const info = JSON.parse(await readFile(join(dataDir, 'daemon.json'), 'utf8')) as DaemonInfo
  // before a `--`, whatever follows it is the workload's command line
  const withDir = (a: string[]): string[] => {
    const dash = a.indexOf('--')
    return dash < 0 ? [...a, '--data-dir', dataDir] : [...a.slice(0, dash), '--data-dir', dataDir, ...a.slice(dash)]
  }
  return {
    dataDir,
    info,
    proc,
    logs,
    exited,
    cli: async (a, o) => await dms(withDir(a), { netns: opts.lan?.netns, ...o }),
    cliJson: async (a, o) => await dmsJson(withDir(a), { netns: opts.lan?.netns, ...o }),
    stop: async () => { proc.kill('SIGTERM'); return await exited },
    kill9: async () => { proc.kill('SIGKILL'); await exited }
  }
}

export function tail (logs: Array<Record<string, unknown>>): string {
  return logs.slice(-15).map(l => JSON.stringify(l)).join('\n')
}

/** Stops daemons (ignoring those already gone) and removes their data dirs. */
export async function cleanup (daemons: Array<Daemon | undefined>, dirs: string[] = []): Promise<void> {
  await Promise.all(daemons.map(async d => {
    if (d === undefined) return
    if (d.proc.exitCode === null && d.proc.signalCode === null) await d.stop()
  }))
  await Promise.all([...daemons.map(d => d?.dataDir), ...dirs].filter((x): x is string => x !== undefined).map(async d => { await rm(d, { recursive: true, force: true }) }))
}

/** Polls `check` until it returns a value (or true), with a deadline; for state that has no event to await across processes. */
export async function eventually<T> (check: () => Promise<T | undefined | false>, timeoutMs = 15_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (let i = 0; i < Math.ceil(timeoutMs / intervalMs) + 1; i++) {
    try {
      const v = await check()
      if (v !== undefined && v !== false) return v
    } catch (err) { last = err }
    if (Date.now() > deadline) break
    await new Promise(resolve => setTimeout(resolve, intervalMs))
  }
  throw new Error(`condition not met within ${timeoutMs} ms${last !== undefined ? `: ${String(last)}` : ''}`)
}

/** Streams open on a daemon (both ends), from its Prometheus scrape (`dms_streams_open`, specs/streams.md). */
export async function openStreams (d: Daemon): Promise<number> {
  const text = await (await fetch(`${d.info.api}/metrics`)).text()
  let n = 0
  for (const m of text.matchAll(/^dms_streams_open\{role="(?:reader|writer)"\} (\d+)$/gm)) n += Number(m[1])
  return n
}

/**
 * Stops every allocation still running on a daemon: a daemon's own stop leaves its workloads
 * running (the next start adopts them), so a test that started some ends them itself.
 */
export async function stopAllocations (d: Daemon | undefined): Promise<void> {
  if (d === undefined || d.proc.exitCode !== null || d.proc.signalCode !== null) return
  const r = await d.cli(['actor', 'cmd', '/dms/node/allocations/list'])
  if (r.code !== 0) return
  const { allocations } = JSON.parse(r.stdout) as { allocations: Array<{ id: string, status: string }> }
  for (const a of allocations.filter(a => a.status === 'running' || a.status === 'starting' || a.status === 'pending')) {
    await d.cli(['actor', 'cmd', '/dms/node/allocation/stop', '--data', JSON.stringify({ id: a.id, graceMs: 0 })])
  }
}
