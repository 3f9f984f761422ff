import { readFile } from 'node:fs/promises'

/**
 * What the cluster script reads of a daemon process from Linux's /proc: resident memory and CPU
 * time. No sampling library: two files, parsed as proc(5) documents them.
 */

/** Clock ticks per second of /proc/PID/stat's times (`getconf CLK_TCK`): 100 on every Linux dms runs on. */
export const CLK_TCK = 100

/**
 * Memory of a process in bytes, undefined when it is gone: VmRSS (resident set), RssAnon (its
 * private part: heap, stacks; RssFile, the rest, is mostly node's binary, whose pages every
 * daemon shares) and Pss (the resident set with each shared page divided among its sharers:
 * what one more daemon costs the machine).
 */
export async function memory (pid: number): Promise<{ rss: number, anon: number, pss: number } | undefined> {
  let status: string
  let rollup: string
  try {
    [status, rollup] = await Promise.all([readFile(`/proc/${pid}/status`, 'utf8'), readFile(`/proc/${pid}/smaps_rollup`, 'utf8')])
  } catch { return undefined }
  const kb = (s: string, k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) * 1024
  return { rss: kb(status, 'VmRSS'), anon: kb(status, 'RssAnon'), pss: kb(rollup, 'Pss') }
}

/**
 * CPU seconds the process used so far, its own (utime + stime) and its waited-for children's
 * (cutime + cstime: a hardware probe's commands). Undefined when the process is gone.
 */
export async function cpuSeconds (pid: number): Promise<number | undefined> {
  let s: string
  try { s = await readFile(`/proc/${pid}/stat`, 'utf8') } catch { return undefined }
  // the command name (field 2) is in parentheses and may hold spaces: count fields after its ')'
  const rest = s.slice(s.lastIndexOf(')') + 2).split(' ')
  // rest[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17
  const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(rest[i]), 0)
  return Number.isFinite(ticks) ? ticks / CLK_TCK : undefined
}

/** The q-quantile (0..1) of `xs` by nearest rank; NaN when empty. */
export function quantile (xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]
}
