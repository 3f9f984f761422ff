import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Command } from 'commander'
import { InvalidArgument } from '../lib/errors.js'
import { formatDuration, parseDuration } from '../lib/units.js'

/** Options every command that touches a data dir or a key context accepts. */
export interface CliGlobals {
  dataDir: string
  context: string
  /** Deadline for daemon calls, ms. */
  timeoutMs: number
}

export const DEFAULT_TIMEOUT_MS = 30_000

export function defaultDataDir (): string {
  return resolve(process.env.DMS_HOME ?? join(homedir(), '.dms'))
}

/** What a command that talks to the daemon needs, for its help. */
export const NEEDS_DAEMON = 'Needs: the running daemon of the data dir (dms run --detach; dms status tells) and the\npassphrase of the --context key (DMS_PASSPHRASE, or a prompt on a terminal).'

/** Adds --data-dir, --context and --timeout to a command, and what it needs to its help. */
export function withCommon (cmd: Command, defaultContext = 'user', needs = NEEDS_DAEMON): Command {
  return withOutput(cmd.addHelpText('after', `\n${needs}`)
    .option('--data-dir <dir>', 'data directory (default: $DMS_HOME or ~/.dms)')
    .option('--context <context>', 'key context to act as', defaultContext)
    .option('--timeout <duration>', 'deadline for the call (e.g. 5s, 1m)', '30s'))
}

/** Adds --json and -o/--output to a command (human output on a terminal, JSON otherwise). */
export function withOutput (cmd: Command): Command {
  return cmd
    .option('-o, --output <format>', 'json | text (default: text on a terminal, json when piped)')
    .option('--json', 'same as -o json')
}

export interface OutputOpts { json?: boolean, output?: string }

/**
 * Whether to print JSON: asked for, or stdout is not a terminal (scripts and tests get exactly
 * the documented JSON whatever the terminal would have shown).
 */
export function wantsJson (o: OutputOpts = {}): boolean {
  if (o.output !== undefined && o.output !== 'json' && o.output !== 'text') throw new InvalidArgument(`-o takes json or text, got '${o.output}'`, { field: 'output' })
  if (o.json === true || o.output === 'json') return true
  if (o.output === 'text') return false
  return process.stdout.isTTY !== true
}

/** Colour only on a terminal, and never with NO_COLOR (https://no-color.org). */
export function colour (code: number, text: string): string {
  const on = process.stdout.isTTY === true && (process.env.NO_COLOR ?? '') === ''
  return on ? `\u001b[${code}m${text}\u001b[0m` : text
}
export const bold = (t: string): string => colour(1, t)
export const green = (t: string): string => colour(32, t)
export const red = (t: string): string => colour(31, t)
export const dim = (t: string): string => colour(2, t)

/** Keys whose number is a time in Unix ms in some replies (`since`, `stateSince`, `expiresAt`). */
const TIME_KEY = /^(since|.+Since|.+At)$/

/**
 * The CLI prints ISO-8601 times everywhere: a reply's Unix-ms times (named by TIME_KEY) are
 * turned into ISO strings. `dms actor cmd` prints the wire reply as it is.
 */
export function isoTimes (value: unknown, depth = 0): unknown {
  if (depth > 32 || value === null || typeof value !== 'object') return value
  if (Array.isArray(value)) return value.map(v => isoTimes(v, depth + 1))
  return Object.fromEntries(Object.entries(value).map(([k, v]) =>
    [k, TIME_KEY.test(k) && typeof v === 'number' && v > 0 ? new Date(v).toISOString() : isoTimes(v, depth + 1)]))
}

/** Prints `value` as JSON (times in ISO-8601), or as `human(value)` for a person at a terminal. */
export function emit<T> (o: OutputOpts, value: T, human?: (v: T) => string): void {
  const v = isoTimes(value) as T
  if (human === undefined || wantsJson(o)) printJson(v)
  else process.stdout.write(human(v).replace(/\n?$/, '\n'))
}

/** A table: a header row and rows of cells, columns padded to their widest cell. */
export function table (header: string[], rows: string[][]): string {
  if (rows.length === 0) return dim('(none)')
  // eslint-disable-next-line no-control-regex
  const width = (s: string): number => s.replace(/\u001b\[\d+m/g, '').length
  const widths = header.map((h, i) => Math.max(width(h), ...rows.map(r => width(r[i] ?? ''))))
  const line = (cells: string[]): string => cells.map((c, i) => i === cells.length - 1 ? c : c + ' '.repeat(widths[i] - width(c))).join('  ')
  return [bold(line(header)), ...rows.map(line)].join('\n')
}

/** `2025-01-01T12:00:00.000Z (3m ago)`: an ISO time, and how long ago, for people. */
export function ago (iso: string | number): string {
  const t = typeof iso === 'number' ? iso : Date.parse(iso)
  if (Number.isNaN(t)) return String(iso)
  const d = Date.now() - t
  return `${new Date(t).toISOString()} (${d >= 0 ? `${formatDuration(d)} ago` : `in ${formatDuration(-d)}`})`
}

export function globalsFrom (opts: { dataDir?: string, context?: string, timeout?: string }): CliGlobals {
  return {
    dataDir: opts.dataDir !== undefined ? resolve(opts.dataDir) : defaultDataDir(),
    context: opts.context ?? 'user',
    timeoutMs: opts.timeout !== undefined ? parseDuration(opts.timeout, '--timeout') : DEFAULT_TIMEOUT_MS
  }
}

export function printJson (value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n')
}
