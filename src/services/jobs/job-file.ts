import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { BadRequest } from '../../lib/errors.js'
import { parseDuration } from '../../lib/units.js'
import { parseEnsemble } from '../orchestrator/ensemble.js'
import type { Ensemble } from '../orchestrator/ensemble-types.js'
import {
  DEFAULT_PARALLELISM, DEFAULT_PART_TIMEOUT_MS, DEFAULT_REDUCE_TIMEOUT_MS, DEFAULT_RETRIES, EXIT_MARKER,
  MAX_JOB_INPUT_BYTES, MAX_PARTS, MAX_PART_INPUT_BYTES
} from './constants.js'
import type { JobInput } from './schemas.js'

/**
 * The job file (specs/jobs.md, "Job file"): YAML naming the work per part, how it splits, an
 * optional reduce step at the origin, parallelism and retries. `parseJob` checks it whole and
 * turns it into a `JobSpec`: every part's input known, the work checked as an ensemble would be.
 */

const Duration = z.union([z.string(), z.number()])
const Command = z.array(z.string()).min(1).max(1024)
const EnvName = /^[A-Za-z_][A-Za-z0-9_]*$/

export const JobFile = z.strictObject({
  version: z.literal('V1').optional(),
  name: z.string().min(1).max(128).optional(),
  work: z.strictObject({
    executor: z.enum(['process', 'docker']).default('process'),
    command: Command,
    /** docker only. */
    image: z.string().min(1).optional(),
    env: z.record(z.string().regex(EnvName, 'an environment variable name is letters, digits and _, not starting with a digit'), z.union([z.string(), z.number(), z.boolean()]).transform(String)).default({}),
    /** As an ensemble allocation's (`cpu: { cores }`, `ram: { size }`, `disk: { size }`). */
    resources: z.record(z.string(), z.unknown())
  }),
  split: z.strictObject({
    /** Inline values: one part each. */
    inputs: z.array(z.string()).min(1).max(MAX_PARTS).optional(),
    /** `parts` parts over [from, to): each gets `lo hi` (its sub-range) as input. */
    range: z.strictObject({ from: z.number().int(), to: z.number().int(), parts: z.number().int().min(1).max(MAX_PARTS) }).optional(),
    /** A directory (relative to the job file) whose files are shared out, one part each, in name order: the CLI reads them. */
    directory: z.string().min(1).optional(),
    /** Files (relative to the job file), one part each: the CLI reads them. */
    files: z.array(z.string().min(1)).min(1).max(MAX_PARTS).optional()
  }).refine(s => [s.inputs, s.range, s.directory, s.files].filter(x => x !== undefined).length === 1, 'give exactly one of inputs, range, directory, files'),
  reduce: z.strictObject({ command: Command, timeout: Duration.optional() }).optional(),
  /** Nodes at most. */
  parallelism: z.number().int().min(1).max(256).default(DEFAULT_PARALLELISM),
  /** Runs again after a non-zero exit, per part. */
  retries: z.number().int().min(0).max(100).default(DEFAULT_RETRIES),
  /** Per part, from its start. */
  timeout: Duration.optional(),
  /** When the queue is empty, idle nodes run a copy of a part still running elsewhere (the first result is recorded). */
  backup: z.boolean().default(true)
})
export type JobFile = z.infer<typeof JobFile>

/** What the coordinator runs: persisted with the job (JSON). */
export interface JobSpec {
  name?: string
  executor: 'process' | 'docker'
  command: string[]
  image?: string
  env: Record<string, string>
  resources: Record<string, unknown>
  /** One per part, base64. */
  inputs: string[]
  /** Range splits: each part's [lo, hi), also in DMS_PART_FROM / DMS_PART_TO. */
  ranges?: Array<[number, number]>
  reduce?: { command: string[], timeoutMs: number }
  parallelism: number
  retries: number
  partTimeoutMs: number
  backup: boolean
}

const problem = (path: string, message: string): BadRequest => new BadRequest(`job file: ${path}: ${message}`, { field: path })

/** The job file's YAML, checked; `inputs` are what the CLI read for `directory` / `files`. */
export function parseJob (text: string, inputs?: JobInput[]): JobSpec {
  let raw: unknown
  try { raw = parseYaml(text, { uniqueKeys: true }) } catch (err) { throw problem('(document)', (err as Error).message.split('\n')[0]) }
  const r = JobFile.safeParse(raw)
  if (!r.success) {
    const i = r.error.issues[0]
    throw problem(i.path.join('.') || '(document)', i.message)
  }
  const f = r.data
  if (f.work.executor === 'docker' && f.work.image === undefined) throw problem('work.image', 'the docker executor needs an image')
  if (f.work.executor === 'process' && f.work.image !== undefined) throw problem('work.image', 'the process executor runs no images')
  for (const name of Object.keys(f.work.env)) if (name.startsWith('DMS_')) throw problem(`work.env.${name}`, 'names starting with DMS_ are set by dms itself')
  const spec: JobSpec = {
    executor: f.work.executor,
    command: f.work.command,
    env: f.work.env,
    resources: f.work.resources,
    inputs: [],
    parallelism: f.parallelism,
    retries: f.retries,
    partTimeoutMs: f.timeout !== undefined ? durationAt('timeout', f.timeout) : DEFAULT_PART_TIMEOUT_MS,
    backup: f.backup
  }
  if (f.name !== undefined) spec.name = f.name
  if (f.work.image !== undefined) spec.image = f.work.image
  if (f.reduce !== undefined) spec.reduce = { command: f.reduce.command, timeoutMs: f.reduce.timeout !== undefined ? durationAt('reduce.timeout', f.reduce.timeout) : DEFAULT_REDUCE_TIMEOUT_MS }
  const s = f.split
  if (s.inputs !== undefined) {
    spec.inputs = s.inputs.map(v => Buffer.from(v, 'utf8').toString('base64'))
  } else if (s.range !== undefined) {
    const { from, to, parts } = s.range
    if (to <= from) throw problem('split.range', `to (${to}) must be above from (${from})`)
    if (parts > to - from) throw problem('split.range.parts', `${parts} parts over ${to - from} values leaves some empty`)
    spec.ranges = []
    for (let i = 0; i < parts; i++) {
      const lo = from + Math.floor(i * (to - from) / parts)
      const hi = from + Math.floor((i + 1) * (to - from) / parts)
      spec.ranges.push([lo, hi])
      spec.inputs.push(Buffer.from(`${lo} ${hi}\n`, 'utf8').toString('base64'))
    }
  } else {
    const which = s.directory !== undefined ? 'split.directory' : 'split.files'
    if (inputs === undefined || inputs.length === 0) throw problem(which, 'the files are read by the CLI (dms job run) and sent as inputs; none came')
    if (inputs.length > MAX_PARTS) throw problem(which, `${inputs.length} files; at most ${MAX_PARTS} parts`)
    spec.inputs = inputs.map(i => i.data)
  }
  let total = 0
  for (const [i, b64] of spec.inputs.entries()) {
    const bytes = Buffer.byteLength(b64, 'base64')
    if (bytes > MAX_PART_INPUT_BYTES) throw problem('split', `part ${i}'s input is ${bytes} bytes; at most ${MAX_PART_INPUT_BYTES} per part in this version (larger inputs need the chunked transfer, not built yet)`)
    total += bytes
  }
  if (total > MAX_JOB_INPUT_BYTES) throw problem('split', `the inputs are ${total} bytes together; at most ${MAX_JOB_INPUT_BYTES}`)
  // the work must be a valid allocation: checked as the ensemble of part 0 (on no peer)
  partEnsemble(spec, 0, undefined)
  return spec
}

function durationAt (path: string, v: string | number): number {
  try { return parseDuration(v, path) } catch (err) { throw problem(path, (err as Error).message) }
}

/** `$` is special in ensemble strings (${VAR}): every one is written `$$` to mean itself. */
const literal = (s: string): string => s.replaceAll('$', '$$')

/**
 * The part's command: a POSIX shell wrapper that writes the input to a file, sets DMS_PART_*,
 * runs the command with the input on stdin, and ends with the command's exit status as the last
 * line of stderr (`dms-part-exit=N`), itself exiting 0. So a failing part still *completes* as an
 * allocation and its output stays readable; the coordinator decides on retries from the marker.
 * The input is base64 inside the script: base64 is shell-safe within single quotes.
 */
export function partScript (spec: JobSpec, index: number): string {
  const range = spec.ranges?.[index]
  const vars = [`DMS_PART_INDEX=${index}`, `DMS_PART_COUNT=${spec.inputs.length}`, ...(range !== undefined ? [`DMS_PART_FROM=${range[0]}`, `DMS_PART_TO=${range[1]}`] : [])]
  const exit = (code: string): string => `printf '\\n${EXIT_MARKER}%s\\n' ${code} >&2`
  return [
    'PATH="${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"',
    `export PATH ${vars.join(' ')}`,
    'DMS_PART_INPUT="$PWD/.dms-part-input"; export DMS_PART_INPUT',
    `printf %s '${spec.inputs[index]}' | base64 -d > "$DMS_PART_INPUT" || { echo 'dms: cannot write the part input' >&2; ${exit('125')}; exit 0; }`,
    '"$@" < "$DMS_PART_INPUT"; c=$?',
    exit('"$c"'),
    'exit 0'
  ].join('\n')
}

/**
 * The ensemble text (JSON is YAML) that runs part `index`: one task allocation `part` that stays
 * down when it fails (the coordinator retries, not the supervisor), pinned to `peer` if given.
 */
export function partEnsembleText (spec: JobSpec, index: number, peer: string | undefined): string {
  const script = partScript(spec, index)
  const execution: Record<string, unknown> = spec.executor === 'docker'
    ? { type: 'docker', image: literal(spec.image as string), entrypoint: ['sh', '-c'], cmd: [script, 'dms-part', ...spec.command].map(literal) }
    : { type: 'process', cmd: ['sh', '-c', script, 'dms-part', ...spec.command].map(literal) }
  execution.environment = Object.fromEntries(Object.entries(spec.env).map(([k, v]) => [k, literal(v)]))
  return JSON.stringify({
    version: 'V1',
    allocations: { part: { executor: spec.executor, type: 'task', resources: spec.resources, execution, restart: { policy: 'never' }, failure_recovery: 'stay_down' } },
    nodes: { worker: { allocations: ['part'], ...(peer !== undefined ? { peer } : {}) } }
  })
}

/** The parsed ensemble of part `index` (a BadRequest names what is wrong with the work). */
export function partEnsemble (spec: JobSpec, index: number, peer: string | undefined): Ensemble {
  try {
    return parseEnsemble(partEnsembleText(spec, index, peer), { env: {}, source: 'work' })
  } catch (err) {
    if (err instanceof BadRequest) throw new BadRequest(`job file: the work is not a valid allocation: ${err.message}`, { field: 'work' })
    throw err
  }
}
