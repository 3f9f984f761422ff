import { createHash } from 'node:crypto'
import { mkdir, readFile, readdir, stat, writeFile, appendFile } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import type { Command } from 'commander'
import { parse as parseYaml } from 'yaml'
import { InvalidArgument } from '../../lib/errors.js'
import type { FileChunk, JobInput, JobView } from '../../services/jobs/index.js'
import { callBehavior, openSession, type Session } from '../call.js'
import { progress } from '../progress.js'
import { DEFAULT_TIMEOUT_MS, ago, emit, globalsFrom, printJson, table, withCommon, type CliGlobals, type OutputOpts } from '../common.js'

interface CommonOpts extends OutputOpts { dataDir?: string, context?: string, timeout?: string }

/** A long poll asks the daemon to answer within this (the envelope lifetime allows 10 min). */
const POLL_MS = 5 * 60_000
/** Polls of `--follow`: bounded, as every loop (a poll answers at every change of the job). */
const MAX_POLLS = 1_000_000
/** Chunks of one file read at most (1 TiB at the chunk below). */
const MAX_CHUNKS = 4 * 1024 * 1024
const CHUNK_BYTES = 256 * 1024
const FINAL = new Set(['Completed', 'Failed', 'Cancelled'])

/**
 * The files a job file's `split.directory` / `split.files` name (relative to the file), read here
 * and sent with the job: the daemon may run elsewhere than this shell's filesystem.
 */
async function inputsOf (file: string, text: string): Promise<JobInput[] | undefined> {
  let doc: unknown
  try { doc = parseYaml(text) } catch { return undefined } // the daemon names the problem
  const split = (doc as { split?: { directory?: unknown, files?: unknown } } | null)?.split
  const base = dirname(resolve(file))
  let paths: string[]
  if (typeof split?.directory === 'string') {
    const dir = resolve(base, split.directory)
    let names: string[]
    try { names = (await readdir(dir)).sort() } catch (err) { throw new InvalidArgument(`split.directory: cannot read ${dir}: ${(err as Error).message}`) }
    paths = []
    for (const n of names) if ((await stat(join(dir, n))).isFile()) paths.push(join(dir, n))
  } else if (Array.isArray(split?.files)) {
    paths = split.files.map(f => resolve(base, String(f)))
  } else {
    return undefined
  }
  return await Promise.all(paths.map(async p => {
    try { return { name: basename(p), data: (await readFile(p)).toString('base64') } } catch (err) { throw new InvalidArgument(`cannot read ${p}: ${(err as Error).message}`) }
  }))
}

/** One line per change of the job: its status, and its parts' counts. */
function line (v: JobView): string {
  const c = v.counts
  return `${v.status}: ${c.done}/${c.parts} done, ${c.running} running, ${c.pending} pending${c.failed > 0 ? `, ${c.failed} failed` : ''} (${c.runs} runs) — ${v.reason}`
}

/** Follows a job (long polls on its version) until it ends, each change on stderr. */
async function follow (g: CliGlobals, s: Session, id: string): Promise<JobView> {
  const p = progress()
  let v = await callBehavior<JobView>(g, '/dms/node/job/status', { id }, { session: s })
  let last = ''
  try {
    for (let i = 0; i < MAX_POLLS; i++) {
      const l = line(v)
      if (l !== last) { p.step(l); last = l }
      if (FINAL.has(v.status)) break
      v = await callBehavior<JobView>(g, '/dms/node/job/status', { id, after: v.version }, { session: s, timeoutMs: POLL_MS })
    }
  } finally {
    p.done()
  }
  return v
}

/** Reads a file the job keeps at its origin, chunk by chunk, into `sink`; checks its sha256 when the daemon gives one. */
async function readAll (g: CliGlobals, s: Session, path: string, req: Record<string, unknown>, sink: (b: Buffer) => Promise<void>): Promise<void> {
  const hash = createHash('sha256')
  let offset = 0
  let expected: string | undefined
  for (let i = 0; i < MAX_CHUNKS; i++) {
    const c = await callBehavior<FileChunk>(g, path, { ...req, offset, maxBytes: CHUNK_BYTES }, { session: s })
    const b = Buffer.from(c.data, 'base64')
    hash.update(b)
    await sink(b)
    expected = c.sha256
    offset = c.nextOffset
    if (c.eof) break
  }
  const got = hash.digest('hex')
  if (expected !== undefined && got !== expected) throw new InvalidArgument(`what was read has sha256 ${got}, the job recorded ${expected}: read it again`)
}

async function run (file: string, o: CommonOpts & { follow?: boolean }): Promise<void> {
  let text: string
  try { text = await readFile(file, 'utf8') } catch (err) { throw new InvalidArgument(`cannot read ${file}: ${(err as Error).message}`) }
  const inputs = await inputsOf(file, text)
  const g: CliGlobals = { ...globalsFrom({ dataDir: o.dataDir, context: o.context }), timeoutMs: DEFAULT_TIMEOUT_MS }
  const s = await openSession(g)
  const { id } = await callBehavior<{ id: string }>(g, '/dms/node/job/new', { job: text, ...(inputs !== undefined ? { inputs } : {}) }, { session: s })
  if (o.follow !== true) { process.stdout.write(JSON.stringify({ id }) + '\n'); return }
  process.stderr.write(`job ${id}\n`)
  const v = await follow(g, s, id)
  process.stdout.write(JSON.stringify({ id, status: v.status, reason: v.reason, result: v.result ?? null, ...(v.failedPart !== undefined ? { failedPart: v.failedPart, stderrTail: v.stderrTail ?? '' } : {}) }) + '\n')
  if (v.status !== 'Completed') process.exitCode = 1
}

/** `dms job run|status|logs|result|cancel|list`. */
export function register (program: Command): void {
  const j = program.command('job').description('jobs split across nodes, coordinated by the local node (specs/jobs.md): run, status, logs, result, cancel, list')

  withCommon(j.command('run <file>'))
    .description('run a job file; prints {id} (with --follow: progress on stderr, then {id, status, reason, result} as the last line of stdout; exit 1 unless it completed)')
    .option('--follow', 'follow the job until it ends')
    .addHelpText('after', '\nExamples:\n  dms job run primes.yaml --follow && dms job result <id>')
    .action(run)

  withCommon(j.command('status <id>'))
    .description('one job: status, reason, its nodes, and each part (status, runs, where its result came from)')
    .option('--follow', 'print each change until the job ends')
    .action(async (id: string, o: CommonOpts & { follow?: boolean }) => {
      const g = globalsFrom(o)
      if (o.follow === true) { printJson(await follow(g, await openSession(g), id)); return }
      printJson(await callBehavior(g, '/dms/node/job/status', { id }))
    })

  withCommon(j.command('list'))
    .description('the jobs this node coordinates (or did), oldest first')
    .action(async (o: CommonOpts) => {
      emit(o, await callBehavior<{ jobs: JobView[] }>(globalsFrom(o), '/dms/node/job/list', {}), v => table(
        ['ID', 'STATUS', 'PARTS', 'DONE', 'CREATED', 'REASON'],
        v.jobs.map(x => [x.id.slice(0, 12), x.status, String(x.counts.parts), String(x.counts.done), ago(x.createdAt), x.reason.slice(0, 60)])))
    })

  withCommon(j.command('logs <id> [part]'))
    .description('a part\'s stderr as collected at the origin (raw on stdout); without PART, the job\'s transitions')
    .action(async (id: string, part: string | undefined, o: CommonOpts) => {
      const g = globalsFrom(o)
      if (part === undefined) {
        const v = await callBehavior<JobView>(g, '/dms/node/job/status', { id })
        for (const t of v.transitions) process.stdout.write(`${t.at} ${t.status}: ${t.reason}\n`)
        return
      }
      const n = Number(part)
      if (!Number.isInteger(n) || n < 0) throw new InvalidArgument(`PART is a part number (0, 1, …), got '${part}'`, { field: 'part' })
      await readAll(g, await openSession(g), '/dms/node/job/logs', { id, part: n }, async b => { process.stdout.write(b) })
    })

  withCommon(j.command('result <id>'))
    .description('the result of a completed job (raw on stdout, its sha256 checked); with --out DIR: DIR/result and each part\'s output as DIR/part-NNNNN')
    .option('--out <dir>', 'write the result and every part\'s output into this directory')
    .action(async (id: string, o: CommonOpts & { out?: string }) => {
      const g = globalsFrom(o)
      const s = await openSession(g)
      if (o.out === undefined) { await readAll(g, s, '/dms/node/job/result', { id }, async b => { process.stdout.write(b) }); return }
      const dir = resolve(o.out)
      await mkdir(dir, { recursive: true })
      const into = async (name: string, req: Record<string, unknown>): Promise<void> => {
        const path = join(dir, name)
        await writeFile(path, '')
        await readAll(g, s, '/dms/node/job/result', req, async b => { await appendFile(path, b) })
      }
      await into('result', { id })
      const v = await callBehavior<JobView>(g, '/dms/node/job/status', { id }, { session: s })
      for (const p of v.parts) await into(`part-${String(p.index).padStart(5, '0')}`, { id, part: p.index })
      printJson({ id, dir, result: v.result, parts: v.parts.length })
    })

  withCommon(j.command('cancel <id>'))
    .description('cancel a job: every part stopped and released on every node; answers once done (status Cancelled)')
    .action(async (id: string, o: CommonOpts) => {
      printJson(await callBehavior(globalsFrom(o), '/dms/node/job/cancel', { id }))
    })
}
