import { InvalidArgument } from './errors.js'

/**
 * The environment a child process of the daemon gets: the one rule for every process dms starts
 * (hardware probes now, workloads through the executors later).
 *
 * The daemon's own environment holds secrets (`DMS_PASSPHRASE` above all, and whatever else the
 * operator's shell exported), so nothing is inherited by default: a child gets `PATH` (to find
 * its own helpers), the C locale (tools print numbers and messages in the form their parsers
 * expect, whatever the operator's locale), and only what the caller names. No `DMS_*` variable
 * ever reaches a child, inherited or given.
 */
export interface ChildEnvOptions {
  /** Names to copy from the parent environment when set there (e.g. `HOME`, `TMPDIR`). */
  keep?: readonly string[]
  /** Variables to set, after the defaults (a workload's own environment). */
  set?: Readonly<Record<string, string>>
}

/** The daemon's configuration and secrets; never passed to a child. */
export const DMS_ENV_PREFIX = 'DMS_'

/** PATH when the parent has none: the usual system directories, nothing of the user's. */
export const FALLBACK_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

/** C locale: stable, parseable output from vendor tools (decimal points, English messages). */
const LOCALE = { LANG: 'C', LC_ALL: 'C' } as const

export function childEnv (parent: NodeJS.ProcessEnv = process.env, opts: ChildEnvOptions = {}): Record<string, string> {
  const env: Record<string, string> = { PATH: nonEmpty(parent.PATH) ?? FALLBACK_PATH, ...LOCALE }
  for (const name of opts.keep ?? []) {
    refuseDms(name, 'keep')
    const v = parent[name]
    if (v !== undefined) env[name] = v
  }
  for (const [name, value] of Object.entries(opts.set ?? {})) {
    refuseDms(name, 'set')
    env[name] = value
  }
  return env
}

/** A caller asking for a `DMS_*` variable is a bug to report, not a wish to drop silently. */
function refuseDms (name: string, where: string): void {
  if (name.toUpperCase().startsWith(DMS_ENV_PREFIX)) {
    throw new InvalidArgument(`a child process never gets ${DMS_ENV_PREFIX}* variables ('${name}' in ${where})`, { name })
  }
}

function nonEmpty (s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s
}
