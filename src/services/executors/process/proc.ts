import { readFileSync } from 'node:fs'
import { readFile, readdir } from 'node:fs/promises'

/**
 * What the process executor reads from `/proc` (Linux): a process's state, group and start time,
 * so that a pid is only ever taken for a workload when its start time matches (pids are recycled:
 * `pid_max` is often 32768), and zombies count as ended (an orphaned workload's parent becomes
 * pid 1, which on some machines never reaps).
 */
export interface ProcStat {
  pid: number
  /** R, S, D, Z (zombie), X (dead), T, … */
  state: string
  ppid: number
  pgid: number
  sid: number
  /** Field 22: clock ticks after boot; with the pid, it names one process for the machine's uptime. */
  startTime: string
  /** Fields 14 + 15: user + system CPU time in clock ticks. */
  cpuTicks: number
}

/** `sysconf(_SC_CLK_TCK)`: 100 on every Linux ABI Node runs on (the kernel's USER_HZ). */
export const CLOCK_TICKS_PER_SECOND = 100

export function parseStat (pid: number, text: string): ProcStat | undefined {
  // The command name (field 2) is in parentheses and may itself contain spaces and ')'.
  const close = text.lastIndexOf(')')
  if (close < 0) return undefined
  const f = text.slice(close + 2).split(' ')
  // f[0] is field 3; field n is f[n - 3].
  if (f.length < 20) return undefined
  return {
    pid,
    state: f[0],
    ppid: Number(f[1]),
    pgid: Number(f[2]),
    sid: Number(f[3]),
    cpuTicks: Number(f[11]) + Number(f[12]),
    startTime: f[19]
  }
}

export async function readStat (pid: number): Promise<ProcStat | undefined> {
  try {
    return parseStat(pid, await readFile(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return undefined
  }
}

/**
 * Synchronous on purpose: called right after spawn, before the event loop turns, so the child
 * cannot have been reaped yet even if it already ended (its zombie still has a stat).
 */
export function readStatSync (pid: number): ProcStat | undefined {
  try {
    return parseStat(pid, readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return undefined
  }
}

export const isLive = (s: ProcStat | undefined): s is ProcStat => s !== undefined && s.state !== 'Z' && s.state !== 'X'

/** A valid pid to signal: never 0 or 1 (or negative), which would reach our own group or init. */
export function pidOf (id: string): number | undefined {
  if (!/^\d+$/.test(id)) return undefined
  const pid = Number(id)
  return Number.isSafeInteger(pid) && pid > 1 ? pid : undefined
}

export async function allPids (): Promise<number[]> {
  const names = await readdir('/proc')
  const out: number[] = []
  for (const n of names) if (/^\d+$/.test(n)) out.push(Number(n))
  return out
}

/** Live members of process group `pgid` (zombies excluded). One pass over /proc. */
export async function groupMembers (pgid: number): Promise<ProcStat[]> {
  const out: ProcStat[] = []
  for (const pid of await allPids()) {
    const s = await readStat(pid)
    if (isLive(s) && s.pgid === pgid) out.push(s)
  }
  return out
}

/** Whether any process of group `pgid` still exists; cheap (`kill(-pgid, 0)`) when none does. */
export async function groupHasLiveMembers (pgid: number): Promise<boolean> {
  try {
    process.kill(-pgid, 0)
  } catch (err) {
    // ESRCH: no process at all in the group. EPERM: some exist (not ours to signal): look.
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false
  }
  // Something exists, maybe only zombies nobody reaps: look for a live one.
  return (await groupMembers(pgid)).length > 0
}

export async function readCmdline (pid: number): Promise<string[] | undefined> {
  try {
    const raw = await readFile(`/proc/${pid}/cmdline`, 'utf8')
    return raw.split('\0').slice(0, -1)
  } catch {
    return undefined
  }
}

/** The environment a process started with (`/proc/<pid>/environ`). */
export async function readEnviron (pid: number): Promise<Record<string, string> | undefined> {
  try {
    const raw = await readFile(`/proc/${pid}/environ`, 'utf8')
    const env: Record<string, string> = {}
    for (const kv of raw.split('\0')) {
      const eq = kv.indexOf('=')
      if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1)
    }
    return env
  } catch {
    return undefined
  }
}

/** Resident memory in bytes (`VmRSS`), or undefined when the process is gone. */
export async function readRssBytes (pid: number): Promise<number | undefined> {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))
    return m === null ? 0 : Number(m[1]) * 1024
  } catch {
    return undefined
  }
}

export function signalSafely (pid: number, signal: NodeJS.Signals): void {
  try { process.kill(pid, signal) } catch { /* already gone */ }
}
