import { mkdir, readFile, readdir, rmdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { WorkloadLimits } from '../types.js'
import { signalSafely } from './proc.js'

/**
 * Control groups for the process executor: one group per workload under a parent for this node,
 * `<root>/<node>/<workload>` in every hierarchy used, where `<root>` defaults to the daemon's own
 * group + `/dms` (nested under it, so the workloads stay inside whatever limits the daemon itself
 * runs under, and several daemons on one machine never share a parent).
 *
 * What is used is detected, never assumed:
 * - cgroup v2 when the unified hierarchy offers `cpu` and `memory` and they can be delegated
 *   down to the node's parent (`cpu.max`, `memory.max`);
 * - else cgroup v1 when the `cpu` and `memory` hierarchies are mounted and writable
 *   (`cpu.cfs_quota_us`, `memory.limit_in_bytes`; `cpuacct` too, for accounting, when mounted);
 * - else none (the executor falls back to rlimits).
 */
export type CgroupKind = 'cgroup-v2' | 'cgroup-v1'

export interface Cgroups {
  kind: CgroupKind
  /** The node's parent directory in each hierarchy used (first = the one listed). */
  parents: string[]
  /** Creates the workload's groups with the limits written; returns their directories. */
  create: (name: string, limits: WorkloadLimits) => Promise<string[]>
  /** The directories of workload `name` (whether or not they exist). */
  dirsOf: (name: string) => string[]
  /** Names of the workload groups that exist under the node's parent. */
  list: () => Promise<string[]>
  stats: (dirs: string[]) => Promise<{ cpuSeconds?: number, memoryBytes?: number }>
}

/** cgroup.procs of each dir: the wrapper writes its pid into each before running the workload. */
export const procsFiles = (dirs: string[]): string[] => dirs.map(d => join(d, 'cgroup.procs'))

export async function pidsIn (dirs: string[]): Promise<number[]> {
  const pids = new Set<number>()
  for (const d of dirs) {
    try {
      for (const line of (await readFile(join(d, 'cgroup.procs'), 'utf8')).split('\n')) {
        if (/^\d+$/.test(line)) pids.add(Number(line))
      }
    } catch { /* no such group (any more) */ }
  }
  return [...pids]
}

export async function signalAll (dirs: string[], signal: NodeJS.Signals): Promise<number> {
  const pids = await pidsIn(dirs)
  for (const pid of pids) if (pid > 1) signalSafely(pid, signal)
  return pids.length
}

/** Removes the groups (they must be empty); best effort, returns the dirs still there. */
export async function removeDirs (dirs: string[]): Promise<string[]> {
  const left: string[] = []
  for (const d of dirs) {
    try { await rmdir(d) } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') left.push(d)
    }
  }
  return left
}

/** Removes the node's parent dirs when empty (EBUSY/ENOTEMPTY when other groups remain: fine). */
export async function removeParentsIfEmpty (cg: Cgroups): Promise<void> {
  for (const p of cg.parents) {
    await rmdir(p).catch(() => {})
  }
}

interface Mount { point: string, root: string, fstype: string, superOptions: string[] }

function parseMountinfo (text: string): Mount[] {
  const out: Mount[] = []
  for (const line of text.split('\n')) {
    const dash = line.indexOf(' - ')
    if (dash < 0) continue
    const left = line.slice(0, dash).split(' ')
    const right = line.slice(dash + 3).split(' ')
    out.push({ root: unescape(left[3]), point: unescape(left[4]), fstype: right[0], superOptions: (right[2] ?? '').split(',') })
  }
  return out
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)))

/** `/proc/self/cgroup`: hierarchy id → (controllers, path). v2 is the line `0::<path>`. */
function parseProcCgroup (text: string): Array<{ controllers: string[], path: string }> {
  const out: Array<{ controllers: string[], path: string }> = []
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line)
    if (m !== null) out.push({ controllers: m[2] === '' ? [] : m[2].split(','), path: m[3] })
  }
  return out
}

/** The daemon's own group path inside a mount, relative to what the mount shows. */
function ownDir (mount: Mount, path: string): string {
  const rel = mount.root !== '/' && path.startsWith(mount.root) ? path.slice(mount.root.length) : path
  return join(mount.point, rel)
}

async function readText (p: string): Promise<string | undefined> {
  try { return await readFile(p, 'utf8') } catch { return undefined }
}

export interface DetectInit {
  /** Path inside each hierarchy under which `<node>/` goes; default: own group + `/dms`. */
  root?: string
  /** Directory name of this node's parent. */
  node: string
}

export type Detected = { cgroups: Cgroups } | { cgroups: undefined, reason: string }

export async function detectCgroups (init: DetectInit): Promise<Detected> {
  const mounts = parseMountinfo(await readText('/proc/self/mountinfo') ?? '')
  const own = parseProcCgroup(await readText('/proc/self/cgroup') ?? '')
  const reasons: string[] = []

  const v2 = await tryV2(mounts, own, init).catch((err: Error) => err.message)
  if (typeof v2 !== 'string') return { cgroups: v2 }
  reasons.push(`v2: ${v2}`)
  const v1 = await tryV1(mounts, own, init).catch((err: Error) => err.message)
  if (typeof v1 !== 'string') return { cgroups: v1 }
  reasons.push(`v1: ${v1}`)
  return { cgroups: undefined, reason: reasons.join('; ') }
}

function base (mount: Mount, ownPath: string, init: DetectInit): string {
  return init.root !== undefined ? join(mount.point, init.root, init.node) : join(ownDir(mount, ownPath), 'dms', init.node)
}

async function tryV2 (mounts: Mount[], own: Array<{ controllers: string[], path: string }>, init: DetectInit): Promise<Cgroups> {
  const m = mounts.find(x => x.fstype === 'cgroup2')
  const self = own.find(x => x.controllers.length === 0 && x.path !== '')
  if (m === undefined || self === undefined) throw new Error('no unified hierarchy mounted')
  const top = m.point
  const offered = (await readText(join(top, 'cgroup.controllers')) ?? '').trim().split(/\s+/)
  if (!offered.includes('cpu') || !offered.includes('memory')) throw new Error(`the unified hierarchy offers [${offered.join(' ')}], not cpu and memory`)
  const parent = base(m, self.path, init)
  // Delegate cpu and memory down from the mount to the node's parent: every level on the way
  // must enable them for its children (a level with processes of its own refuses, except the
  // root: then this machine's v2 cannot be used by us, and we say so). Run again before each
  // create, since the parent is removed once empty.
  const rel = parent.slice(top.length).split('/').filter(Boolean)
  const delegate = async (): Promise<void> => {
    let dir = top
    for (let i = 0; i <= rel.length; i++) {
      if (i > 0) {
        dir = join(dir, rel[i - 1])
        await mkdir(dir, { recursive: true })
      }
      const ctl = join(dir, 'cgroup.subtree_control')
      const have = (await readText(ctl) ?? '').trim().split(/\s+/)
      if (!have.includes('cpu') || !have.includes('memory')) {
        try {
          await writeFile(ctl, '+cpu +memory')
        } catch (err) {
          throw new Error(`cannot enable cpu and memory in ${ctl}: ${(err as Error).message}`)
        }
      }
    }
  }
  await delegate()
  const dirsOf = (name: string): string[] => [join(parent, name)]
  return {
    kind: 'cgroup-v2',
    parents: [parent],
    dirsOf,
    async create (name, limits) {
      const [d] = dirsOf(name)
      await delegate()
      await mkdir(d)
      const period = 100_000
      if (limits.cpuCores > 0) await writeFile(join(d, 'cpu.max'), `${Math.max(1000, Math.round(limits.cpuCores * period))} ${period}`)
      if (limits.ramBytes > 0) {
        await writeFile(join(d, 'memory.max'), String(Math.floor(limits.ramBytes)))
        // No swapping past the limit, where swap is accounted at all.
        await writeFile(join(d, 'memory.swap.max'), '0').catch(() => {})
      }
      return [d]
    },
    list: async () => await listDirs(parent),
    async stats (dirs) {
      const cpu = /^usage_usec (\d+)$/m.exec(await readText(join(dirs[0], 'cpu.stat')) ?? '')
      const mem = await readText(join(dirs[0], 'memory.current'))
      return {
        cpuSeconds: cpu === null ? undefined : Number(cpu[1]) / 1e6,
        memoryBytes: mem === undefined ? undefined : Number(mem.trim())
      }
    }
  }
}

async function tryV1 (mounts: Mount[], own: Array<{ controllers: string[], path: string }>, init: DetectInit): Promise<Cgroups> {
  const hier = (controller: string): { mount: Mount, path: string } | undefined => {
    const mount = mounts.find(x => x.fstype === 'cgroup' && x.superOptions.includes(controller))
    const self = own.find(x => x.controllers.includes(controller))
    return mount === undefined || self === undefined ? undefined : { mount, path: self.path }
  }
  const cpu = hier('cpu')
  const memory = hier('memory')
  if (cpu === undefined || memory === undefined) throw new Error('the cpu and memory hierarchies are not both mounted')
  const acct = hier('cpuacct')
  const parentOf = (h: { mount: Mount, path: string }): string => base(h.mount, h.path, init)
  const cpuParent = parentOf(cpu)
  const memParent = parentOf(memory)
  // cpuacct is often co-mounted with cpu (`cpu,cpuacct`): then it is the same directory.
  const acctParent = acct === undefined ? undefined : parentOf(acct)
  const parents = [...new Set([cpuParent, memParent, ...(acctParent === undefined ? [] : [acctParent])])]
  for (const p of parents) {
    try {
      await mkdir(p, { recursive: true })
    } catch (err) {
      throw new Error(`cannot create ${p}: ${(err as Error).message}`)
    }
  }
  const dirsOf = (name: string): string[] => parents.map(p => join(p, name))
  return {
    kind: 'cgroup-v1',
    parents,
    dirsOf,
    async create (name, limits) {
      const dirs = dirsOf(name)
      await Promise.all(dirs.map(async d => await mkdirParents(d)))
      const cpuDir = join(cpuParent, name)
      const memDir = join(memParent, name)
      await Promise.all([
        (async () => {
          if (limits.cpuCores <= 0) return
          const period = Number((await readText(join(cpuDir, 'cpu.cfs_period_us')) ?? '100000').trim())
          // The kernel refuses quotas under 1 ms.
          await writeFile(join(cpuDir, 'cpu.cfs_quota_us'), String(Math.max(1000, Math.round(limits.cpuCores * period))))
        })(),
        (async () => {
          if (limits.ramBytes <= 0) return
          await writeFile(join(memDir, 'memory.limit_in_bytes'), String(Math.floor(limits.ramBytes)))
          // memory+swap no higher than memory: no swapping past the limit (absent without swap accounting).
          await writeFile(join(memDir, 'memory.memsw.limit_in_bytes'), String(Math.floor(limits.ramBytes))).catch(() => {})
        })()
      ])
      return dirs
    },
    list: async () => await listDirs(parents[0]),
    async stats (dirs) {
      const name = dirs[0].slice(dirs[0].lastIndexOf('/') + 1)
      const usage = acctParent === undefined ? undefined : await readText(join(acctParent, name, 'cpuacct.usage'))
      const mem = await readText(join(memParent, name, 'memory.usage_in_bytes'))
      return {
        cpuSeconds: usage === undefined ? undefined : Number(usage.trim()) / 1e9,
        memoryBytes: mem === undefined ? undefined : Number(mem.trim())
      }
    }
  }
}

/**
 * mkdir of a workload group, re-creating the node's parent when another executor of the same
 * node removed it in between (it removes parents once empty). Bounded: a few attempts.
 */
async function mkdirParents (dir: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await mkdir(dir, { recursive: true })
      return
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 3) throw err
    }
  }
}

async function listDirs (parent: string): Promise<string[]> {
  try {
    return (await readdir(parent, { withFileTypes: true })).filter(e => e.isDirectory()).map(e => e.name)
  } catch {
    return []
  }
}
