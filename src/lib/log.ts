import { pino, type Logger } from 'pino'

export type { Logger }

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

/** The logging configuration in force: the default level, and levels set per part. */
export interface LogConfig { level: LogLevel, parts: Record<string, LogLevel> }

/**
 * Changes log levels at run time (`/dms/node/logger/config`). A pino child takes its parent's
 * level when it is made and keeps it, so the control tracks every child (pino's `onChild`, which
 * grandchildren inherit) and sets each one's level itself: the level of the nearest `part` on
 * its chain that has one (`network` covers `network` → `hello` unless `hello` has its own), else
 * the default. Children are held weakly: an allocation's logger goes when the allocation does.
 */
export interface LogControl {
  get: () => LogConfig
  /** `parts[x] = null` removes part x's own level. Returns the configuration now in force. */
  set: (change: { level?: LogLevel, parts?: Record<string, LogLevel | null> }) => LogConfig
}

/** Trackers prune collected children every this many adoptions (a bounded sweep). */
const PRUNE_EVERY = 512

class LogTracker implements LogControl {
  private level: LogLevel
  private readonly parts = new Map<string, LogLevel>()
  private readonly children = new Set<WeakRef<Logger>>()
  private readonly chains = new WeakMap<Logger, readonly string[]>()
  private root: Logger | undefined
  private adopted = 0

  constructor (level: LogLevel) { this.level = level }

  attach (root: Logger): void {
    this.root = root
    this.chains.set(root, [])
  }

  adopt (child: Logger): void {
    const parent = Object.getPrototypeOf(child) as Logger
    const above = this.chains.get(parent) ?? []
    const part = child.bindings().part
    const chain = typeof part === 'string' && part !== above.at(-1) ? [...above, part] : above
    this.chains.set(child, chain)
    this.children.add(new WeakRef(child))
    child.level = this.levelFor(chain)
    if (++this.adopted % PRUNE_EVERY === 0) {
      for (const ref of this.children) if (ref.deref() === undefined) this.children.delete(ref)
    }
  }

  private levelFor (chain: readonly string[]): LogLevel {
    for (let i = chain.length - 1; i >= 0; i--) {
      const l = this.parts.get(chain[i])
      if (l !== undefined) return l
    }
    return this.level
  }

  get (): LogConfig { return { level: this.level, parts: Object.fromEntries(this.parts) } }

  set (change: { level?: LogLevel, parts?: Record<string, LogLevel | null> }): LogConfig {
    if (change.level !== undefined) this.level = change.level
    for (const [part, l] of Object.entries(change.parts ?? {})) {
      if (l === null) this.parts.delete(part); else this.parts.set(part, l)
    }
    if (this.root !== undefined) this.root.level = this.level
    for (const ref of this.children) {
      const child = ref.deref()
      if (child === undefined) { this.children.delete(ref); continue }
      child.level = this.levelFor(this.chains.get(child) ?? [])
    }
    return this.get()
  }
}

const trackers = new WeakMap<Logger, LogTracker>()

/** The level control of a logger made here (createLogger, silentLogger); a root-only one for others. */
export function logControlOf (log: Logger): LogControl {
  let t = trackers.get(log)
  if (t === undefined) {
    t = new LogTracker(log.level as LogLevel)
    t.attach(log)
    trackers.set(log, t)
  }
  return t
}

/**
 * Structured logs (pino): JSON lines, or pretty lines when stderr is a TTY. Level from
 * DMS_LOG_LEVEL (default info). Never log secrets: keys, passphrases, tokens' signatures.
 */
export function createLogger (name = 'dms', level = process.env.DMS_LOG_LEVEL ?? 'info'): Logger {
  const pretty = process.stderr.isTTY === true && process.env.DMS_LOG_FORMAT !== 'json'
  const tracker = new LogTracker(level as LogLevel)
  const log = pino({
    name,
    level,
    onChild: (child) => { tracker.adopt(child) },
    redact: { paths: ['passphrase', '*.passphrase', 'privateKey', '*.privateKey', 'token', '*.token', 'cap', '*.cap'], censor: '[redacted]' },
    transport: pretty ? { target: 'pino-pretty', options: { destination: 2, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } : undefined
  }, pretty ? undefined : pino.destination(2))
  tracker.attach(log)
  trackers.set(log, tracker)
  return log
}

/** A logger that discards everything (tests, library users who pass none). */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
