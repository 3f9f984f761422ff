import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Command } from 'commander'
import { parseDuration } from '../lib/units.js'

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

/** Adds --data-dir, --context and --timeout to a command. */
export function withCommon (cmd: Command, defaultContext = 'user'): Command {
  return cmd
    .option('--data-dir <dir>', 'data directory (default: $DMS_HOME or ~/.dms)')
    .option('--context <context>', 'key context to act as', defaultContext)
    .option('--timeout <duration>', 'deadline for the call (e.g. 5s, 1m)', '30s')
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
