import { randomBytes } from 'node:crypto'
import { readFileSync, unlinkSync } from 'node:fs'
import { link, mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Conflict } from '../lib/errors.js'

/**
 * The data dir lock, `<data-dir>/lock`: one process at a time sets a data dir up or runs on it.
 * `dms run` holds it for the daemon's life; `dms init` (and a first `dms run`) while creating keys.
 *
 * The file names its holder: `{pid, purpose, token, since, procStart}`. It is created exclusively
 * (a complete temporary file hard-linked into place, so a reader never sees half of it) and
 * removed by its holder on exit. A holder killed with `kill -9` leaves it behind; the next
 * process finds that pid dead (or reused: on Linux the process start time in /proc/<pid>/stat
 * differs) and takes the lock over, so a crash never leaves a data dir locked for good.
 *
 * Taking over moves the stale file aside by rename and checks that what it moved is the stale
 * file it judged (byte for byte; each lock carries a random token); if another process took the
 * lock over in between, its lock is put back. What remains is a window of a few system calls in
 * which three processes would all have to be taking over the same stale lock at once.
 */
export type LockPurpose = 'run' | 'init'

export interface LockHolder {
  pid: number
  purpose: LockPurpose
  /** Random: tells two locks of the same pid apart. */
  token: string
  /** Unix ms. */
  since: number
  /** Start time of the holder's process (/proc/<pid>/stat field 22), where there is /proc. */
  procStart?: string
}

export interface DataDirLock {
  readonly path: string
  readonly holder: LockHolder
  /** Removes the lock file if it is still this one. Idempotent. */
  release: () => Promise<void>
  /** The same, synchronously: for `process.on('exit')`. */
  releaseSync: () => void
}

export interface LockOptions {
  /**
   * How long to wait for a holder that is only setting the data dir up (`init`: creating keys
   * takes well under a second). A running daemon (`run`) is never waited for. Default 0.
   */
  waitMs?: number
}

export const LOCK_FILE = 'lock'
/** Between looks at a lock held by an `init`: short against the ~0.2 s that creating two keys takes. */
const WAIT_POLL_MS = 50
/** Bound on acquisition rounds (each: a try, a look at the holder, perhaps a takeover). */
const MAX_ROUNDS = 1_000

/** Locks this process holds (by token): its own pid in a lock file is not proof of a live holder. */
const heldHere = new Set<string>()

export function lockPath (dataDir: string): string {
  return join(dataDir, LOCK_FILE)
}

export async function lockDataDir (dataDir: string, purpose: LockPurpose, opts: LockOptions = {}): Promise<DataDirLock> {
  const path = lockPath(dataDir)
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  const holder: LockHolder = { pid: process.pid, purpose, token: randomBytes(8).toString('hex'), since: Date.now() }
  const start = await procStart(process.pid)
  if (start !== undefined) holder.procStart = start
  const raw = JSON.stringify(holder) + '\n'
  const tmp = `${path}.${process.pid}.${holder.token}`
  await writeFile(tmp, raw, { mode: 0o600, flag: 'wx' })
  const deadline = Date.now() + (opts.waitMs ?? 0)
  try {
    for (let round = 0; round < MAX_ROUNDS; round++) {
      try {
        await link(tmp, path)
        heldHere.add(holder.token)
        return held(path, holder, raw)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      const found = await readLock(path)
      if (found === undefined) continue // released in the meantime: try again
      if (found.holder !== undefined && await isAlive(found.holder)) {
        if (found.holder.purpose === 'init' && Date.now() < deadline) {
          await new Promise(resolve => setTimeout(resolve, WAIT_POLL_MS))
          continue
        }
        throw locked(dataDir, found.holder)
      }
      await takeOver(path, found.raw, `${path}.stale.${process.pid}.${holder.token}.${round}`)
    }
    throw new Conflict(`could not lock ${dataDir}: the lock kept changing hands`, { dataDir })
  } finally {
    await unlink(tmp).catch(() => {})
  }
}

function locked (dataDir: string, h: LockHolder): Conflict {
  const what = h.purpose === 'run' ? `a daemon (pid ${h.pid}) runs on ${dataDir}` : `another dms process (pid ${h.pid}) is setting up ${dataDir}`
  return new Conflict(`${what}; one process at a time may use a data dir`, { dataDir, pid: h.pid, purpose: h.purpose })
}

function held (path: string, holder: LockHolder, raw: string): DataDirLock {
  let released = false
  const mine = (text: string | undefined): boolean => text === raw
  return {
    path,
    holder,
    release: async () => {
      if (released) return
      released = true
      heldHere.delete(holder.token)
      const text = await readFile(path, 'utf8').catch(() => undefined)
      if (mine(text)) await unlink(path).catch(() => {})
    },
    releaseSync: () => {
      if (released) return
      released = true
      heldHere.delete(holder.token)
      let text: string | undefined
      try { text = readFileSync(path, 'utf8') } catch { text = undefined }
      if (mine(text)) { try { unlinkSync(path) } catch {} }
    }
  }
}

/** The lock file's text and, when it parses, its holder; undefined when there is no file. */
async function readLock (path: string): Promise<{ raw: string, holder?: LockHolder } | undefined> {
  let raw: string
  try { raw = await readFile(path, 'utf8') } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  try {
    const h = JSON.parse(raw) as Partial<LockHolder>
    if (Number.isInteger(h.pid) && (h.purpose === 'run' || h.purpose === 'init') && typeof h.token === 'string') {
      return { raw, holder: h as LockHolder }
    }
  } catch {}
  // Unreadable (cut short by a power loss): no live process can be shown to hold it.
  return { raw }
}

async function isAlive (h: LockHolder): Promise<boolean> {
  if (h.pid === process.pid) return heldHere.has(h.token)
  try {
    process.kill(h.pid, 0)
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  if (h.procStart === undefined) return true
  const now = await procStart(h.pid)
  // A different start time is another process that got the same pid after the holder died.
  return now === undefined || now === h.procStart
}

/** Moves the stale lock (text `stale`) aside; restores a live lock moved by mistake. */
async function takeOver (path: string, stale: string, aside: string): Promise<void> {
  try {
    await rename(path, aside)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return // someone else took it over
    throw err
  }
  const moved = await readFile(aside, 'utf8').catch(() => undefined)
  if (moved !== stale) {
    // Another process took the lock over between our look and our rename: give it back (unless
    // yet another lock is in place by now, which then stands).
    await link(aside, path).catch(() => {})
  }
  await unlink(aside).catch(() => {})
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); undefined without /proc. */
async function procStart (pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
    // Field 2 (the command) is in parentheses and may hold spaces: count from after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return fields[19]
  } catch {
    return undefined
  }
}
