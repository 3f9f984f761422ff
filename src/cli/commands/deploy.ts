import { readFile } from 'node:fs/promises'
import type { Command } from 'commander'
import { InvalidArgument, Timeout } from '../../lib/errors.js'
import { parseDuration } from '../../lib/units.js'
import { parseEnsemble, planEnsemble } from '../../services/orchestrator/ensemble.js'
import type { DeploymentView, Manifest } from '../../services/orchestrator/index.js'
import { callBehavior, openSession, streamBehavior, type Session } from '../call.js'
import { progress, type Progress } from '../progress.js'
import { DEFAULT_TIMEOUT_MS, ago, emit, globalsFrom, printJson, table, withCommon, type CliGlobals, type OutputOpts } from '../common.js'

interface CommonOpts extends OutputOpts { dataDir?: string, context?: string, timeout?: string }
interface DeployOpts { dataDir?: string, context?: string, timeout: string, bidWindow?: string, colocate?: boolean, follow?: boolean, dryRun?: boolean, image?: string[] }

/** A long poll asks the daemon to answer within this (the envelope lifetime allows 10 min). */
const POLL_MS = 5 * 60_000
/** Polls of one wait or `--follow`: bounded, as every loop (about 3 days of 5-minute polls). */
const MAX_POLLS = 1_000
/** How long past the deployment's own deadline `dms deploy` waits for the daemon to say Failed. */
const DEADLINE_GRACE_MS = 15_000
/** The daemon's default deadline to Running (behaviors/node/deployment/new.ts). */
const DEFAULT_DEPLOY_TIMEOUT = '2m'

const FINAL = new Set(['Completed', 'Failed'])

/** A duration flag of `dms deploy`: units required (`parseDuration` refuses a bare number, naming the flag). */
export function parseDurationFlag (flag: string, value: string): number {
  return parseDuration(value, flag)
}

/**
 * The `${VAR}` names an ensemble file uses, by the rule of `substitute` in ensemble.ts (`$$` is a
 * literal `$`, so `$${X}` names nothing). Only these are sent to the daemon: the rest of this
 * shell's environment is none of the deployment's business.
 */
export function variablesOf (text: string): string[] {
  const names = new Set<string>()
  for (let i = 0; i < text.length; i++) {
    if (text[i] !== '$') continue
    if (text[i + 1] === '$') { i++; continue }
    if (text[i + 1] !== '{') continue
    const m = /^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}/.exec(text.slice(i, i + 1024))
    if (m !== null) names.add(m[1])
  }
  return [...names]
}

/** `a` or `node.a` → the allocation's name (the daemon knows allocations by name). */
function allocationName (arg: string, m: Manifest): string {
  if (m.allocations[arg] !== undefined) return arg
  const dot = arg.indexOf('.')
  if (dot > 0) {
    const [node, name] = [arg.slice(0, dot), arg.slice(dot + 1)]
    if (m.allocations[name]?.node === node) return name
  }
  const known = Object.entries(m.allocations).map(([a, x]) => `${x.node}.${a}`)
  throw new InvalidArgument(`deployment ${m.ensembleId} has no allocation '${arg}' (it has ${known.join(', ') || 'none placed yet'})`, { field: 'allocation' })
}

/** `--image name=image` flags as a map; a malformed one is refused naming it. */
export function imagesFrom (flags: string[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (const f of flags) {
    const eq = f.indexOf('=')
    if (eq <= 0 || eq === f.length - 1) throw new InvalidArgument(`--image takes NAME=IMAGE (the image named in the file, then the one to run), got '${f}'`, { field: '--image' })
    out[f.slice(0, eq)] = f.slice(eq + 1)
  }
  return out
}

/** What `dms deploy` prints last: the status and where each allocation runs. */
function summary (v: DeploymentView, m: Manifest): Record<string, unknown> {
  const allocations: Record<string, { peer: string | null, id: string | null, status: string }> = {}
  for (const [name, a] of Object.entries(m.allocations)) allocations[`${a.node}.${name}`] = { peer: a.peer ?? null, id: a.id ?? null, status: a.status }
  return { ensembleId: v.ensembleId, status: v.status, reason: v.reason, allocations }
}

/** Shows the transitions numbered past `seen` as progress (the view keeps only the latest ones). */
function printTransitions (p: Progress, v: DeploymentView, seen: number): number {
  const fresh = Math.min(v.transitionCount - seen, v.transitions.length)
  for (const t of fresh > 0 ? v.transitions.slice(-fresh) : []) p.step(`${t.status}: ${t.reason}`)
  return v.transitionCount
}

/**
 * Follows a deployment's transitions (long polls, `after` the last one seen) until `done` says so
 * or `deadline` (unix ms) passes; every transition is printed as it comes.
 */
async function follow (g: CliGlobals, s: Session, p: Progress, v: DeploymentView, seenBefore: number, done: (v: DeploymentView) => boolean, deadline: number): Promise<DeploymentView> {
  let seen = printTransitions(p, v, seenBefore)
  for (let i = 0; i < MAX_POLLS && !done(v); i++) {
    const left = deadline - Date.now()
    if (left <= 0) throw new Timeout(`deployment ${v.ensembleId} is still ${v.status} (${v.reason}); 'dms deployment status ${v.ensembleId}' follows it`, { ensembleId: v.ensembleId })
    v = await callBehavior<DeploymentView>(g, '/dms/node/deployment/status', { id: v.ensembleId, after: seen }, { session: s, timeoutMs: Math.max(1_000, Math.min(POLL_MS, left)) })
    seen = printTransitions(p, v, seen)
  }
  return v
}

async function deploy (file: string, o: DeployOpts): Promise<void> {
  const timeoutMs = parseDurationFlag('--timeout', o.timeout)
  const bidWindowMs = o.bidWindow !== undefined ? parseDurationFlag('--bid-window', o.bidWindow) : undefined
  let text: string
  try { text = await readFile(file, 'utf8') } catch (err) { throw new InvalidArgument(`cannot read ${file}: ${(err as Error).message}`) }
  if (o.dryRun === true) {
    // every problem of the file in one BadRequest, as the daemon would answer it
    printJson({ valid: true, ...planEnsemble(parseEnsemble(text, { source: file })) })
    return
  }
  // per call; the deployment's own deadline is --timeout
  const g: CliGlobals = { ...globalsFrom({ dataDir: o.dataDir, context: o.context }), timeoutMs: DEFAULT_TIMEOUT_MS }
  const env: Record<string, string> = {}
  for (const name of variablesOf(text)) if (process.env[name] !== undefined) env[name] = process.env[name]
  const s = await openSession(g)
  const { ensembleId } = await callBehavior<{ ensembleId: string }>(g, '/dms/node/deployment/new', {
    ensemble: text,
    env,
    timeoutMs,
    ...(bidWindowMs !== undefined ? { bidWindowMs } : {}),
    ...(o.colocate === true ? { colocate: true } : {}),
    ...(o.image !== undefined ? { images: imagesFrom(o.image) } : {})
  }, { session: s })
  const p = progress()
  p.step(`deployment ${ensembleId}`)
  const first = await callBehavior<DeploymentView>(g, '/dms/node/deployment/status', { id: ensembleId }, { session: s })
  // the daemon fails it at its deadline; a little longer here so that its reason is what we show
  let v = await follow(g, s, p, first, 0, x => x.status === 'Running' || FINAL.has(x.status), Date.now() + timeoutMs + DEADLINE_GRACE_MS).finally(() => { p.done() })
  const report = async (): Promise<void> => {
    const m = await callBehavior<Manifest>(g, '/dms/node/deployment/manifest', { id: ensembleId }, { session: s })
    // one line, so that `tail -1` of stdout is the whole document
    process.stdout.write(JSON.stringify(summary(v, m)) + '\n')
  }
  if (v.status === 'Running' && o.follow === true) {
    await report()
    // until it ends: there is no deadline to that but the poll count
    const more = progress()
    v = await follow(g, s, more, v, v.transitionCount, x => FINAL.has(x.status), Date.now() + MAX_POLLS * POLL_MS).finally(() => { more.done() })
  }
  await report()
  // its reason is on stderr already: the last transition printed is `Failed: <reason>`
  if (v.status === 'Failed') process.exitCode = 1
}

/** `dms deploy FILE` and `dms deployment list|status|manifest|logs|shutdown`. */
export function register (program: Command): void {
  program.command('deploy <file>')
    .description('deploy an ensemble file (specs/deployments.md) from the local node and wait until it runs; progress on stderr, then {ensembleId, status, reason, allocations} as the last line of stdout; exit 1 if it failed')
    .option('--data-dir <dir>', 'data directory (default: $DMS_HOME or ~/.dms)')
    .option('--context <context>', 'key context to act as', 'user')
    .option('--timeout <duration>', 'deadline for the deployment to be running (e.g. 30s, 2m; a unit is required)', DEFAULT_DEPLOY_TIMEOUT)
    .option('--bid-window <duration>', 'how long bids are collected at most (e.g. 500ms, 1s; default 1s)')
    .option('--colocate', 'allow two ensemble nodes on one provider')
    .option('--image <name=image>', 'run image <image> wherever the file names <name> (repeatable), e.g. --image busybox=localhost/dms-busybox:latest', (v: string, prev: string[] = []) => [...prev, v])
    .option('--follow', 'once running, keep printing transitions until the deployment ends')
    .option('--dry-run', 'check the file here (no daemon needed) and print the plan: start layers and what each node asks')
    .addHelpText('after', '\nExamples:\n  dms deploy test/fixtures/ensembles/three-services.yaml --timeout 60s\n  dms deploy app.yaml --dry-run\n  DB_PASSWORD=secret dms deploy app.yaml   # ${DB_PASSWORD} in the file is sent, nothing else of the environment')
    .action(deploy)

  const d = program.command('deployment').description('deployments orchestrated by the local node: list, status, manifest, logs, shutdown')

  withCommon(d.command('list'))
    .description('the deployments this node orchestrates (or did), oldest first')
    .action(async (o: CommonOpts) => {
      emit(o, await callBehavior<{ deployments: DeploymentView[] }>(globalsFrom(o), '/dms/node/deployment/list', {}), v => table(
        ['ID', 'STATUS', 'ALLOCATIONS', 'CREATED', 'REASON'],
        v.deployments.map(x => [x.ensembleId.slice(0, 12), x.status, Object.keys(x.allocations).join(','), ago(x.createdAt), x.reason.slice(0, 60)])))
    })

  withCommon(d.command('status <id>'))
    .description('one deployment: status, reason, transitions and allocations')
    .action(async (id: string, o: CommonOpts) => {
      printJson(await callBehavior(globalsFrom(o), '/dms/node/deployment/status', { id }))
    })

  withCommon(d.command('manifest <id>'))
    .description('which allocation runs where: per ensemble node its provider, per allocation its provider, id, handle, ports and status')
    .action(async (id: string, o: CommonOpts) => {
      printJson(await callBehavior(globalsFrom(o), '/dms/node/deployment/manifest', { id }))
    })

  withCommon(d.command('logs <id> <allocation>'))
    .description('print an allocation\'s output wherever it runs (raw text on stdout); ALLOCATION is <alloc> or <node>.<alloc>')
    .option('--stderr', 'its stderr instead of its stdout')
    .option('--follow', 'keep printing new output until the allocation ends (Ctrl-C stops)')
    .action(async (id: string, alloc: string, o: CommonOpts & { stderr?: boolean, follow?: boolean }) => {
      const g = globalsFrom(o)
      const s = await openSession(g)
      const allocation = allocationName(alloc, await callBehavior<Manifest>(g, '/dms/node/deployment/manifest', { id }, { session: s }))
      const stream = o.stderr === true ? 'stderr' : 'stdout'
      if (o.follow === true) {
        // a stream from the allocation's node through the orchestrator's: each chunk as it is written
        for await (const chunk of streamBehavior(g, '/dms/node/deployment/logs/stream', { id, allocation, stream, offset: 0 }, { session: s })) {
          process.stdout.write((chunk as { data: string }).data)
        }
        return
      }
      let offset = 0
      for (let i = 0; i < MAX_POLLS * 100; i++) {
        const chunk = await callBehavior<{ data: string, nextOffset: number, eof: boolean, ended: boolean }>(g, '/dms/node/deployment/logs',
          { id, allocation, stream, offset, wait: false }, { session: s })
        if (chunk.data !== '') process.stdout.write(chunk.data)
        offset = chunk.nextOffset
        if (chunk.eof) return
      }
    })

  withCommon(d.command('shutdown <id>'))
    .description('stop every allocation and release everything on every provider; answers once done (status Completed)')
    .action(async (id: string, o: CommonOpts) => {
      printJson(await callBehavior(globalsFrom(o), '/dms/node/deployment/shutdown', { id }))
    })
}
