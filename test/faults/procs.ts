import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { newIdentity, type Identity } from '../../src/identity/identity.js'
import type { LanHost } from '../e2e/netns.js'
import type { DriverConfig } from './driver.js'

/**
 * The test's side of test/faults/driver.ts: starts a driver process inside a host's network
 * namespace, talks to it (a command, its reply; events as they come), kills it with SIGKILL and
 * starts it again on the same data dir, key and port.
 */
export const ROOT = resolve(import.meta.dirname, '../..')
/** A driver's port: every host is a namespace of its own, so every driver can have the same one (and keep it across restarts). */
export const PORT = 4_100
/** The driver as it runs: transpiled into dist/ by test/faults/setup.ts, beside the library it imports. */
export const DRIVER_JS = join(ROOT, 'dist/test/faults/driver.js')
/** A start loads libp2p and opens level: 2 s of CPU, 8–20 s seen here under a load average of 30; more under the whole suite's load. */
const READY_TIMEOUT_MS = 120_000

export interface Event { event: string, /** When the test read it (ms since the epoch). */ at: number, [k: string]: unknown }

export class DriverError extends Error {
  constructor (readonly wire: { name: string, message: string, [k: string]: unknown }) {
    super(`${wire.name}: ${wire.message}`)
    this.name = wire.name
  }
}

/** One running driver process. */
export class Driver {
  readonly events: Event[] = []
  readonly exited: Promise<number | null>
  peerId = ''
  did = ''
  addr = ''
  private nextId = 1
  private readonly pending = new Map<number, { resolve: (v: any) => void, reject: (e: Error) => void }>()
  private readonly watchers = new Set<{ match: (e: Event) => boolean, resolve: (e: Event) => void }>()
  private stderr = ''

  constructor (readonly proc: ChildProcess, readonly label: string) {
    this.exited = new Promise(resolve => proc.once('exit', code => {
      for (const p of this.pending.values()) p.reject(new Error(`${label} exited (${code ?? proc.signalCode}) before it answered`))
      this.pending.clear()
      resolve(code)
    }))
    proc.stderr!.on('data', (b: Buffer) => { this.stderr = (this.stderr + b.toString()).slice(-8_000) })
    createInterface({ input: proc.stdout! }).on('line', line => {
      let o: Record<string, any>
      try { o = JSON.parse(line) } catch { return }
      if (typeof o.id === 'number') {
        const p = this.pending.get(o.id)
        this.pending.delete(o.id)
        if (o.error !== undefined) p?.reject(new DriverError(o.error))
        else p?.resolve(o.ok)
      } else if (typeof o.event === 'string') {
        const e: Event = { ...o, event: o.event, at: Date.now() }
        this.events.push(e)
        for (const w of [...this.watchers]) if (w.match(e)) { this.watchers.delete(w); w.resolve(e) }
      }
    })
  }

  get alive (): boolean { return this.proc.exitCode === null && this.proc.signalCode === null }
  get log (): string { return this.stderr }

  /** Sends a command; resolves with its reply (rejects with the driver's error, or when it dies first). */
  async call<T = any> (cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    if (!this.alive) throw new Error(`${this.label} is not running`)
    const id = this.nextId++
    const reply = new Promise<T>((resolve, reject) => { this.pending.set(id, { resolve, reject }) })
    this.proc.stdin!.write(JSON.stringify({ id, cmd, ...args }) + '\n')
    return await reply
  }

  /** The first event (already seen or to come) that matches; rejects after `timeoutMs` or when the process dies. */
  async event (match: (e: Event) => boolean, timeoutMs: number, what: string): Promise<Event> {
    const seen = this.events.find(match)
    if (seen !== undefined) return seen
    let w: { match: (e: Event) => boolean, resolve: (e: Event) => void } | undefined
    let timer: NodeJS.Timeout | undefined
    try {
      return await Promise.race([
        new Promise<Event>(resolve => { w = { match, resolve }; this.watchers.add(w) }),
        new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`${this.label}: no ${what} within ${timeoutMs} ms; its stderr:\n${this.stderr.slice(-2_000)}`)) }, timeoutMs) }),
        this.exited.then(code => { throw new Error(`${this.label} exited (${code}) before ${what}:\n${this.stderr.slice(-2_000)}`) })
      ])
    } finally {
      clearTimeout(timer)
      if (w !== undefined) this.watchers.delete(w)
    }
  }

  async kill9 (): Promise<void> {
    if (this.alive) this.proc.kill('SIGKILL')
    await this.exited
  }

  /** Asks the node to stop (it says goodbye to its peers); SIGKILL if it does not exit in time. */
  async stop (): Promise<void> {
    if (!this.alive) return
    this.call('stop').catch(() => {})
    const t = setTimeout(() => { this.proc.kill('SIGKILL') }, 10_000)
    await this.exited
    clearTimeout(t)
  }
}

/** A host's side: its data dir, key and driver config; `start` starts a driver on them (again after a kill). */
export class Side {
  driver: Driver | undefined
  starts = 0
  private constructor (readonly label: string, readonly host: LanHost, readonly identity: Identity, readonly config: DriverConfig, private readonly nodeArgs: string[]) {}

  static async make (label: string, host: LanHost, dir: string, config: Omit<DriverConfig, 'dir' | 'listen'>, nodeArgs: string[] = []): Promise<Side> {
    const identity = await newIdentity()
    await mkdir(dir, { recursive: true, mode: 0o700 })
    await writeFile(join(dir, 'key'), Buffer.from(identity.exportRaw()).toString('hex'), { mode: 0o600 })
    return new Side(label, host, identity, { ...config, dir, listen: `/ip4/${host.ip}/tcp/${PORT}` }, nodeArgs)
  }

  get addr (): string { return `${this.config.listen}/p2p/${this.identity.peerId}` }
  get did (): string { return this.identity.did }
  get peerId (): string { return this.identity.peerId }

  async start (extra: Partial<DriverConfig> = {}): Promise<Driver> {
    this.starts++
    const config = { ...this.config, ...extra }
    const proc = spawn('ip', ['netns', 'exec', this.host.netns, process.execPath, ...this.nodeArgs, DRIVER_JS, JSON.stringify(config)], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, DMS_LOG_LEVEL: process.env.DMS_LOG_LEVEL ?? 'warn' }
    })
    const d = new Driver(proc, `${this.label}#${this.starts}`)
    this.driver = d
    try {
      const ready = await d.event(e => e.event === 'ready', READY_TIMEOUT_MS, 'ready line')
      d.peerId = ready.peerId as string
      d.did = ready.did as string
      d.addr = ready.addr as string
    } catch (err) {
      await d.kill9()
      throw err
    }
    return d
  }

  /** The running driver (the test's bug if none). */
  get d (): Driver {
    if (this.driver === undefined || !this.driver.alive) throw new Error(`${this.label} is not running`)
    return this.driver
  }
}

/**
 * A seeded pseudo-random generator (mulberry32): a run's schedule of faults is printed with its
 * seed, and `FAULTS_SEED=<seed>` replays it.
 */
export function rng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
