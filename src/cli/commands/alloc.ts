import { randomBytes } from 'node:crypto'
import type { Command } from 'commander'
import type { Handle } from '../../actor/types.js'
import { InvalidArgument, NotFound, NotRunning } from '../../lib/errors.js'
import { formatSize, parseCores, parseSize } from '../../lib/units.js'
import { EXECUTOR_NAMES } from '../../services/executors/types.js'
import type { AllocateReply, AllocationView, CommitReply } from '../../services/provider/schemas.js'
import { callBehavior, openSession, streamBehavior, type Session } from '../call.js'
import { progress } from '../progress.js'
import { ago, dim, emit, globalsFrom, table, withCommon, type CliGlobals, type OutputOpts } from '../common.js'

interface CommonOpts extends OutputOpts { dataDir?: string, context?: string, timeout?: string }
interface RunOpts extends CommonOpts {
  executor: string
  type: string
  cpu?: string
  ram?: string
  disk: string
  port?: string[]
  env?: string[]
  image?: string
  restart?: string
  wait?: boolean
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v]
/**
 * `--cpu` and `--ram` when not given: enough for a small process. A VM's guest needs 96 MiB to
 * boot (vm/constants.ts), and its CPU is a quota on QEMU: at 0.1 cores a boot under emulation
 * takes ten times its ~2 s.
 */
const DEFAULT_CPU = '0.1'
const DEFAULT_RAM = '64MiB'
const DEFAULT_VM_CPU = '1'
const DEFAULT_VM_RAM = '128MiB'
/** A long poll asks the daemon to answer within this (the envelope lifetime allows 10 min). */
const POLL_MS = 5 * 60_000
/** Polls of one `--wait` or `--follow`: bounded, as every loop (about 3 days of 5-minute polls). */
const MAX_POLLS = 1_000

/** `--port 8080` (chosen public port) or `--port 18080:8080` (public:private), `/udp` optional. */
export function parsePortArg (arg: string): { private: number, public?: number, protocol: 'tcp' | 'udp' } {
  const m = /^(?:(\d+):)?(\d+)(?:\/(tcp|udp))?$/.exec(arg)
  const n = (s: string | undefined): number | undefined => s === undefined ? undefined : Number(s)
  const pub = n(m?.[1])
  const priv = n(m?.[2])
  const ok = (p: number | undefined): boolean => p === undefined || (p >= 1 && p <= 65535)
  if (m === null || priv === undefined || !ok(priv) || !ok(pub)) throw new InvalidArgument(`--port takes PRIVATE or PUBLIC:PRIVATE (1–65535), optionally /udp; got '${arg}'`)
  return { private: priv, ...(pub !== undefined ? { public: pub } : {}), protocol: (m[3] ?? 'tcp') as 'tcp' | 'udp' }
}

function parseEnvArg (arg: string): [string, string] {
  const i = arg.indexOf('=')
  if (i <= 0) throw new InvalidArgument(`--env takes KEY=VALUE; got '${arg}'`)
  return [arg.slice(0, i), arg.slice(i + 1)]
}

/** Resolves an allocation id to its actor's handle (through the node's list). */
async function find (g: CliGlobals, s: Session, id: string): Promise<AllocationView & { handle: Handle }> {
  const { allocations } = await callBehavior<{ allocations: AllocationView[] }>(g, '/dms/node/allocations/list', { id }, { session: s })
  const found = allocations[0]
  if (found === undefined) throw new NotFound(`no allocation ${id} on this node ('dms alloc list' shows them)`, { id })
  if (found.handle === undefined) throw new NotRunning(`allocation ${id} has no actor yet; try again`, { id })
  return { ...found, handle: found.handle }
}

/** Waits (a bounded series of long polls) until the allocation ended. */
async function waitForEnd (g: CliGlobals, s: Session, handle: Handle): Promise<AllocationView> {
  for (let i = 0; i < MAX_POLLS; i++) {
    const v = await callBehavior<AllocationView>(g, '/dms/allocation/status', { wait: true }, { to: handle, session: s, timeoutMs: POLL_MS })
    if (['completed', 'failed', 'stopped'].includes(v.status)) return v
  }
  throw new InvalidArgument(`gave up waiting after ${MAX_POLLS} polls`)
}

/** `dms alloc run|list|status|logs|stop|restart`. */
export function register (program: Command): void {
  const alloc = program.command('alloc').description('run workloads on the local node and look after them (needs a running daemon and the user key)')

  withCommon(alloc.command('run'))
    .description('commit, allocate and start one allocation on the local node; prints {id, handle, status} (with --wait: {id, status, exitCode} once a task ended, exit 1 if it failed)')
    .usage('[options] -- CMD [ARG...]')
    .argument('[cmd...]', 'the command and its arguments (after --)')
    .option('--executor <name>', 'process | docker | vm (firecracker: vm)', 'process')
    .option('--type <type>', 'task (runs to completion) | service (kept running)', 'task')
    .option('--cpu <cores>', 'CPU cores reserved and enforced (fractions allowed; default 0.1, for a VM 1)')
    .option('--ram <size>', 'RAM reserved and enforced (e.g. 64MiB, 1GiB; default 64MiB, for a VM 128MiB: its guest needs 96MiB to boot)')
    .option('--disk <size>', 'disk reserved (e.g. 0B, 1GiB)', '0B')
    .option('--port <[public:]private>', 'a port of the workload, public one leased on the node (repeatable)', collect)
    .option('--env <KEY=VALUE>', 'an environment variable of the workload (repeatable; nothing else of yours is passed)', collect)
    .option('--image <image>', 'the image (docker executor)')
    .option('--restart <policy>', 'service restart policy: never | on-failure | always')
    .option('--wait', 'wait for a task to end and exit non-zero when it failed')
    .addHelpText('after', '\nExamples:\n  dms alloc run --wait -- echo hello\n  dms alloc run --type service --port 8080 -- python3 -m http.server 8080\n  dms alloc run --executor docker --image localhost/dms-busybox:latest --wait -- echo hi')
    .action(async (cmd: string[], o: RunOpts) => {
      const g = globalsFrom(o)
      // DMS names its micro-VM executor firecracker: dms runs those in its vm executor.
      if (o.executor === 'firecracker') o.executor = 'vm'
      if (!(EXECUTOR_NAMES as readonly string[]).includes(o.executor)) throw new InvalidArgument(`unknown executor '${o.executor}' (${EXECUTOR_NAMES.join(' | ')})`, { field: 'executor' })
      if (!['task', 'service'].includes(o.type)) throw new InvalidArgument(`unknown type '${o.type}' (task | service)`, { field: 'type' })
      if (cmd.length === 0 && o.executor !== 'docker') throw new InvalidArgument('dms alloc run needs a command after --, e.g. dms alloc run -- echo hello')
      const vm = o.executor === 'vm'
      const resources = { cpuCores: parseCores(o.cpu ?? (vm ? DEFAULT_VM_CPU : DEFAULT_CPU)), ramBytes: parseSize(o.ram ?? (vm ? DEFAULT_VM_RAM : DEFAULT_RAM), '--ram'), diskBytes: parseSize(o.disk, '--disk') }
      const spec: Record<string, unknown> = { type: o.type, executor: o.executor }
      if (cmd.length > 0) spec.command = cmd
      if (o.image !== undefined) spec.image = o.image
      if (o.env !== undefined) spec.env = Object.fromEntries(o.env.map(parseEnvArg))
      if (o.restart !== undefined) spec.restart = { policy: o.restart }
      const s = await openSession(g)
      const ensembleId = `run-${randomBytes(4).toString('hex')}`
      await callBehavior<CommitReply>(g, '/dms/deployment/commit', { ensembleId, allocations: [{ name: 'main', resources, ports: (o.port ?? []).map(parsePortArg) }] }, { session: s })
      let allocated: AllocateReply
      try {
        allocated = await callBehavior<AllocateReply>(g, '/dms/deployment/allocate', { ensembleId, allocations: [{ name: 'main', spec }] }, { session: s })
      } catch (err) {
        // nothing may stay reserved for a request that was refused
        await callBehavior(g, '/dms/deployment/revert', { ensembleId }, { session: s }).catch(() => {})
        throw err
      }
      const { id, handle } = allocated.allocations[0]
      const started = await callBehavior<AllocationView>(g, '/dms/allocation/start', {}, { to: handle, session: s })
      if (o.wait !== true) {
        emit(o, { id, handle, status: started.status })
        return
      }
      const p = progress()
      p.step(`allocation ${id} ${started.status}: waiting for it to end`)
      const end = await waitForEnd(g, s, handle).finally(() => { p.done() })
      emit(o, { id, status: end.status, exitCode: end.exitCode ?? null, reason: end.reason })
      if (end.status !== 'completed') process.exitCode = 1
    })

  withCommon(alloc.command('list'))
    .description('the allocations on the local node')
    .action(async (o: CommonOpts) => {
      emit(o, await callBehavior<{ allocations: AllocationView[] }>(globalsFrom(o), '/dms/node/allocations/list', {}), v => table(
        ['ID', 'STATUS', 'TYPE', 'EXECUTOR', 'CPU', 'RAM', 'STARTED', 'COMMAND'],
        v.allocations.map(a => [a.id, a.status, a.type, a.executor, `${a.resources.cpuCores}`, formatSize(a.resources.ramBytes),
          a.startedAt !== undefined ? ago(a.startedAt) : dim('-'), (a.command ?? [a.image ?? '']).join(' ').slice(0, 40)])))
    })

  withCommon(alloc.command('status <id>'))
    .description('one allocation: id, status, reason, exitCode, restarts, health, transitions')
    .action(async (id: string, o: CommonOpts) => {
      const g = globalsFrom(o)
      const s = await openSession(g)
      emit(o, await callBehavior(g, '/dms/allocation/status', {}, { to: (await find(g, s, id)).handle, session: s }))
    })

  withCommon(alloc.command('logs <id>'))
    .description('print an allocation\'s output (raw text on stdout)')
    .option('--stderr', 'its stderr instead of its stdout')
    .option('--follow', 'keep printing new output until the allocation ends (Ctrl-C stops)')
    .action(async (id: string, o: CommonOpts & { stderr?: boolean, follow?: boolean }) => {
      const g = globalsFrom(o)
      const s = await openSession(g)
      const { handle } = await find(g, s, id)
      const stream = o.stderr === true ? 'stderr' : 'stdout'
      if (o.follow === true) {
        // a stream: each chunk as it is written; ends when the allocation ended and all was sent
        for await (const chunk of streamBehavior(g, '/dms/allocation/logs/stream', { stream, offset: 0 }, { to: handle, session: s })) {
          process.stdout.write((chunk as { data: string }).data)
        }
        return
      }
      // what was written so far, a read at a time (the long poll, `wait`, is for callers that do not stream)
      let offset = 0
      for (let i = 0; i < MAX_POLLS * 100; i++) {
        const chunk = await callBehavior<{ data: string, nextOffset: number, eof: boolean, ended: boolean }>(g, '/dms/allocation/logs',
          { stream, offset, wait: false }, { to: handle, session: s })
        if (chunk.data !== '') process.stdout.write(chunk.data)
        offset = chunk.nextOffset
        if (chunk.eof) return
      }
    })

  for (const [verb, describe] of [['stop', 'stop an allocation (SIGTERM, SIGKILL after its grace)'], ['restart', 'restart an allocation\'s workload']] as const) {
    withCommon(alloc.command(`${verb} <id>`))
      .description(describe)
      .action(async (id: string, o: CommonOpts) => {
        const g = globalsFrom(o)
        const s = await openSession(g)
        const v = await callBehavior<AllocationView>(g, `/dms/allocation/${verb}`, {}, { to: (await find(g, s, id)).handle, session: s })
        emit(o, { id: v.id, status: v.status, reason: v.reason, exitCode: v.exitCode ?? null })
      })
  }
}
