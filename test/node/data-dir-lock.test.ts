import { spawn } from 'node:child_process'
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isDmsError } from '../../src/lib/errors.js'
import { lockDataDir, lockPath, type LockHolder } from '../../src/node/data-dir-lock.js'

/** The pid of a process that has exited (and been reaped): certainly not holding anything. */
async function deadPid (): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' })
  await new Promise(resolve => child.on('exit', resolve))
  return child.pid!
}

const conflict = async (p: Promise<unknown>): Promise<Record<string, unknown>> => {
  try { await p } catch (err) { if (isDmsError(err, 'Conflict')) return err.fields; throw err }
  throw new Error('expected Conflict, but the lock was taken')
}

describe('data dir lock', () => {
  let dir: string
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'dms-lock-')) })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  const holderOf = async (): Promise<LockHolder> => JSON.parse(await readFile(lockPath(dir), 'utf8')) as LockHolder

  it('is held by one holder at a time, names it, and is gone once released', async () => {
    const a = await lockDataDir(dir, 'run')
    expect(await holderOf()).toMatchObject({ pid: process.pid, purpose: 'run', token: a.holder.token })
    expect((await stat(lockPath(dir))).mode & 0o777).toBe(0o600)
    expect(await conflict(lockDataDir(dir, 'run'))).toMatchObject({ pid: process.pid, purpose: 'run' })
    // a running daemon is not waited for, whatever the wait allowed
    expect(await conflict(lockDataDir(dir, 'init', { waitMs: 5_000 }))).toMatchObject({ purpose: 'run' })
    await a.release()
    await a.release()
    await expect(stat(lockPath(dir))).rejects.toMatchObject({ code: 'ENOENT' })
    const b = await lockDataDir(dir, 'init')
    await b.release()
    // no temporary or set-aside files are left behind
    expect(await readdir(dir)).toEqual([])
  })

  it('takes over a lock whose holder died (kill -9 leaves the file)', async () => {
    const stale: LockHolder = { pid: await deadPid(), purpose: 'run', token: 'dead', since: 1 }
    await writeFile(lockPath(dir), JSON.stringify(stale))
    const l = await lockDataDir(dir, 'run')
    expect(await holderOf()).toMatchObject({ pid: process.pid, token: l.holder.token })
    await l.release()
  })

  it('takes over a lock whose pid was reused by another process, or names this process without being held here', async () => {
    // pid alive (our parent) but a different process start time: the holder is long gone
    await writeFile(lockPath(dir), JSON.stringify({ pid: process.ppid, purpose: 'run', token: 'old', since: 1, procStart: '1' }))
    const hasProc = await stat('/proc/self/stat').then(() => true, () => false)
    if (hasProc) {
      const l = await lockDataDir(dir, 'run')
      await l.release()
    }
    // this very pid, but no lock of this process: a previous life of the pid (e.g. pid 1 in a container)
    await writeFile(lockPath(dir), JSON.stringify({ pid: process.pid, purpose: 'run', token: 'previous-life', since: 1 }))
    const l = await lockDataDir(dir, 'run')
    expect((await holderOf()).token).toBe(l.holder.token)
    await l.release()
  })

  it('takes over an unreadable lock file (cut short by a power loss)', async () => {
    await writeFile(lockPath(dir), '')
    const l = await lockDataDir(dir, 'init')
    expect((await holderOf()).token).toBe(l.holder.token)
    await l.release()
  })

  it('waits for an init holder within the wait given, then takes the lock', async () => {
    const setup = await lockDataDir(dir, 'init')
    expect(await conflict(lockDataDir(dir, 'run'))).toMatchObject({ purpose: 'init' })
    const waiting = lockDataDir(dir, 'run', { waitMs: 30_000 })
    await setup.release()
    const l = await waiting
    expect((await holderOf()).purpose).toBe('run')
    await l.release()
  })

  it('excludes holders in separate processes: six at once enter one after another', async () => {
    const log = join(dir, 'holders.log')
    const lockDir = join(dir, 'data')
    const fixture = join(import.meta.dirname, 'fixtures', 'lock-holder.ts')
    const codes = await Promise.all(Array.from({ length: 6 }, async () => {
      const child = spawn(process.execPath, ['--import', 'tsx', fixture, lockDir, log], { stdio: ['ignore', 'ignore', 'inherit'] })
      return await new Promise<number | null>(resolve => child.on('exit', resolve))
    }))
    expect(codes).toEqual([0, 0, 0, 0, 0, 0])
    const lines = (await readFile(log, 'utf8')).trim().split('\n')
    expect(lines).toHaveLength(6 * 7)
    for (let i = 0; i < lines.length; i += 7) {
      const pid = lines[i].split(' ')[1]
      expect(lines.slice(i, i + 7)).toEqual([`enter ${pid}`, ...Array(5).fill(`work ${pid}`), `leave ${pid}`])
    }
    await expect(stat(lockPath(lockDir))).rejects.toMatchObject({ code: 'ENOENT' })
  }, 60_000) // six processes loading TypeScript on a shared 2-core machine

  it('release leaves a lock that is no longer its own alone', async () => {
    const a = await lockDataDir(dir, 'run')
    // someone replaced it (an operator, or a takeover after this process was thought dead)
    const other = JSON.stringify({ pid: process.pid, purpose: 'run', token: 'other', since: 2 })
    await writeFile(lockPath(dir), other)
    await a.release()
    expect(await readFile(lockPath(dir), 'utf8')).toBe(other)
    a.releaseSync()
    expect(await readFile(lockPath(dir), 'utf8')).toBe(other)
  })
})
