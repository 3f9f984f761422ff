import { isMap as isYamlMap, isNode, isScalar, parseDocument, visit, type Document } from 'yaml'
import type { z } from 'zod'
import { didFromPeerId, isDid } from '../../identity/did.js'
import { BadRequest } from '../../lib/errors.js'
import { parseCores, parseDuration, parseSize } from '../../lib/units.js'
import { HealthCheckSchema, RestartPolicySchema, type HealthCheck, type RestartPolicy } from '../allocations/spec.js'
import { EXECUTOR_NAMES, type ExecutorName } from '../executors/types.js'
import type { GpuRequest } from '../resources/vector.js'
import type {
  Ensemble, EnsembleAllocation, EnsembleIssue, EnsembleNode, EnsemblePlan, EnsemblePort,
  FailureRecovery, SupervisorStrategy
} from './ensemble-types.js'

/**
 * The ensemble file (DMS's V1 format, specs/deployments.md "Ensemble file"): YAML in, a checked
 * and normalized `Ensemble` out. Every problem in a file is collected and reported at once, each
 * as `path: message`, so a user fixes a file in one pass and nothing is sent before it is whole.
 */

export const ENSEMBLE_VERSION = 'V1'

const TOP_LEVEL = ['version', 'allocations', 'nodes', 'supervisor', 'subnet'] as const
const ALLOCATION_FIELDS = ['executor', 'type', 'resources', 'execution', 'dns_name', 'dnsname', 'healthcheck', 'depends_on', 'restart', 'failure_recovery', 'keys', 'provision'] as const
const RESOURCE_FIELDS = ['cpu', 'ram', 'disk', 'gpus'] as const
const GPU_FIELDS = ['vram', 'vendor', 'model'] as const
const EXECUTION_FIELDS = ['type', 'image', 'cmd', 'args', 'entrypoint', 'environment', 'working_directory'] as const
const HC_TIMING = ['interval', 'timeout', 'retries', 'start_period'] as const
const HC_FIELDS = {
  command: ['type', 'exec', 'command', 'response', 'contains', ...HC_TIMING],
  http: ['type', 'port', 'path', ...HC_TIMING],
  tcp: ['type', 'port', ...HC_TIMING]
} as const
const RESTART_FIELDS = ['policy', 'max_restarts', 'window', 'backoff'] as const
const NODE_FIELDS = ['allocations', 'ports', 'location', 'labels', 'peer', 'failure_recovery', 'redundancy'] as const
const PORT_FIELDS = ['public', 'private', 'allocation', 'protocol'] as const
const LOCATION_FIELDS = ['accept', 'reject'] as const
const PLACE_FIELDS = ['continent', 'country', 'city'] as const
const SUPERVISOR_FIELDS = ['strategy', 'max_restarts', 'window'] as const

const EXECUTORS = EXECUTOR_NAMES
/** DMS's name for its micro-VM executor: DMS files say `firecracker`, which dms runs with its vm executor (QEMU). */
const EXECUTOR_ALIASES: Record<string, ExecutorName> = { firecracker: 'vm' }
const FAILURE_RECOVERY: readonly FailureRecovery[] = ['stay_down', 'one_for_one', 'all_for_one', 'rest_for_one']
const STRATEGIES: readonly SupervisorStrategy[] = ['OneForOne', 'AllForOne', 'RestForOne']

/** DMS's defaults for the orchestrator's supervisor: 3 restarts a minute, then the deployment fails. */
const DEFAULT_SUPERVISOR = { strategy: 'OneForOne', maxRestarts: 3, windowMs: 60_000 } as const

/** Allocation and node names: they become parts of ids and DNS names (a DNS label's 63). */
const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_-]*$/
const MAX_NAME = 63
const DNS_NAME = /^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$/
const MAX_DNS_NAME = 253
/** As the allocation spec's EnvName (src/services/allocations/spec.ts). */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/

/**
 * A bare number in a size field (DMS writes `size: 1 # in GB` and `size: 2048` for RAM) has no
 * unit. Below this it means GiB (DMS's examples: 1 is a gigabyte, not a byte); from it on it
 * means MiB (nobody asks for 2048 GiB of RAM for a container; 2048 MiB is what was meant). Each
 * such reading is recorded in `notes`.
 */
const BARE_SIZE_MIB_FROM = 1024
const GiB = 2 ** 30
const MiB = 2 ** 20

export interface ParseEnsembleOptions {
  /** For `${VAR}` substitution; default `process.env`. */
  env?: Record<string, string | undefined>
  /** The file's name, for messages. */
  source?: string
}

export type CheckResult =
  | { ok: true, ensemble: Ensemble }
  | { ok: false, issues: EnsembleIssue[] }

/**
 * Parses, substitutes and validates an ensemble file. Throws `BadRequest` listing every problem,
 * one `path: message` per line; `fields.issues` holds the same lines, `fields.field` the first
 * path.
 */
export function parseEnsemble (text: string, opts: ParseEnsembleOptions = {}): Ensemble {
  const r = checkEnsemble(text, opts)
  if (r.ok) return r.ensemble
  throw ensembleError(r.issues, opts.source)
}

/** The `BadRequest` for a list of issues (also for a caller that found more of its own). */
export function ensembleError (issues: EnsembleIssue[], source?: string): BadRequest {
  const lines = issues.map(i => `${i.path}: ${i.message}`)
  const head = `${source ?? 'ensemble'}: ${issues.length === 1 ? '1 problem' : `${issues.length} problems`}`
  return new BadRequest([head, ...lines].join('\n'), {
    field: issues[0]?.path,
    issues: lines,
    paths: issues.map(i => i.path),
    ...(source !== undefined ? { source } : {})
  })
}

/** As `parseEnsemble`, but returns the issues instead of throwing (for editors and `--dry-run`). */
export function checkEnsemble (text: string, opts: ParseEnsembleOptions = {}): CheckResult {
  const c = new Check()
  const doc = parseDocument(text, { merge: true, uniqueKeys: true, prettyErrors: true })
  if (doc.errors.length > 0) {
    // The first error only: the parser's later ones mostly follow from it (one unclosed bracket
    // makes a dozen), and the rest of the file cannot be checked until it is fixed.
    const e = doc.errors[0]
    const pos = e.linePos?.[0]
    const message = e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')
    c.issue(pos !== undefined ? `line ${pos.line}, column ${pos.col}` : '(document)', message)
    return { ok: false, issues: c.issues }
  }
  let root: unknown
  try {
    root = doc.toJS({ maxAliasCount: 10_000 })
  } catch (err) {
    // An alias to an anchor not yet set, or an alias bomb.
    c.issue('(document)', err instanceof Error ? err.message : String(err))
    return { ok: false, issues: c.issues }
  }
  if (!isMap(root)) {
    c.issue('(document)', `expected a map with version, allocations and nodes, got ${kind(root)}`)
    return { ok: false, issues: c.issues }
  }
  const kept: Obj = {}
  const carriers = anchorCarriers(doc)
  for (const [key, value] of Object.entries(root)) {
    if ((TOP_LEVEL as readonly string[]).includes(key)) kept[key] = value
    else if (!carriers.has(key)) c.issue(key, `unknown top-level field '${key}' (known: ${TOP_LEVEL.join(', ')})`)
    // else: it only carries an anchor that is used elsewhere (DMS's `nginx_wrapper: &nginx_service`)
  }
  const top = substituteTree(kept, '', opts.env ?? process.env, c) as Obj
  const ensemble = validate(top, c)
  if (c.issues.length > 0) return { ok: false, issues: c.issues }
  return { ok: true, ensemble }
}

/** Start order and what each node asks of its provider. */
export function planEnsemble (e: Ensemble): EnsemblePlan {
  const names = Object.keys(e.allocations)
  const waiting = new Map(names.map(n => [n, new Set(e.allocations[n].dependsOn)]))
  const layers: string[][] = []
  // Kahn's algorithm, a layer at a time; names keep their order of declaration within a layer.
  while (waiting.size > 0) {
    const ready = [...waiting.keys()].filter(n => waiting.get(n)?.size === 0)
    if (ready.length === 0) {
      throw ensembleError([{ path: 'allocations', message: `a dependency cycle among ${[...waiting.keys()].join(', ')}` }])
    }
    for (const n of ready) waiting.delete(n)
    for (const deps of waiting.values()) for (const n of ready) deps.delete(n)
    layers.push(ready)
  }
  const nodes = Object.values(e.nodes).map(node => {
    const allocs = node.allocations.map(a => e.allocations[a])
    // Sum cores in milli-cores so 0.1 + 0.2 stays 0.3 (parseCores keeps that precision).
    const milli = allocs.reduce((s, a) => s + Math.round(a.resources.cpuCores * 1000), 0)
    return {
      name: node.name,
      allocations: [...node.allocations],
      resources: {
        cpuCores: milli / 1000,
        ramBytes: allocs.reduce((s, a) => s + a.resources.ramBytes, 0),
        diskBytes: allocs.reduce((s, a) => s + a.resources.diskBytes, 0),
        gpus: allocs.flatMap(a => a.resources.gpus.map(g => ({ ...g })))
      },
      executors: [...new Set(allocs.map(a => a.executor))],
      ports: node.ports.map(p => ({ ...p })),
      ...(node.peer !== undefined ? { peer: node.peer } : {})
    }
  })
  return { layers, nodes, ignored: [...e.ignored], notes: [...(e.notes ?? [])] }
}

// ---- collecting issues ----

type Obj = Record<string, unknown>

class Check {
  readonly issues: EnsembleIssue[] = []
  readonly ignored: string[] = []
  readonly notes: string[] = []

  /** Where a `${VAR}` could not be filled: what is left there is not checked again. */
  readonly unfilled = new Set<string>()

  issue (path: string, message: string): void {
    if (this.unfilled.has(path)) return
    this.issues.push({ path, message })
  }

  note (path: string, message: string): void {
    this.notes.push(`${path}: ${message}`)
  }
}

const at = (path: string, key: string): string => path === '' ? key : `${path}.${key}`
const item = (path: string, i: number): string => `${path}[${i}]`

function isMap (v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function kind (v: unknown): string {
  if (v === null || v === undefined) return 'nothing'
  if (Array.isArray(v)) return 'a list'
  if (typeof v === 'object') return 'a map'
  if (typeof v === 'string') return `a string ('${v.length > 40 ? `${v.slice(0, 40)}…` : v}')`
  if (typeof v === 'number') return `a number (${v})`
  return `a ${typeof v}`
}

/** The top-level keys whose value holds an anchor that some alias uses. */
function anchorCarriers (doc: Document): Set<string> {
  const used = new Set<string>()
  visit(doc, { Alias (_, node) { used.add(node.source) } })
  const carriers = new Set<string>()
  if (!isYamlMap(doc.contents)) return carriers
  for (const pair of doc.contents.items) {
    if (!isScalar(pair.key) || !isNode(pair.value)) continue
    let carries = false
    visit(pair.value, {
      Node (_, node) {
        if (node.anchor !== undefined && used.has(node.anchor)) { carries = true; return visit.BREAK }
      }
    })
    if (carries) carriers.add(String(pair.key.value))
  }
  return carriers
}

// ---- ${VAR} substitution ----

function substituteTree (v: unknown, path: string, env: Record<string, string | undefined>, c: Check): unknown {
  if (typeof v === 'string') {
    const before = c.issues.length
    const s = substitute(v, path, env, c)
    if (c.issues.length > before) c.unfilled.add(path)
    return s
  }
  if (Array.isArray(v)) return v.map((x, i) => substituteTree(x, item(path, i), env, c))
  if (isMap(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, substituteTree(x, at(path, k), env, c)]))
  return v
}

/** `${NAME}`, `${NAME:-default}` (unset or empty: default), `$$` for a literal `$`; any other `$` stays. */
export function substitute (s: string, path: string, env: Record<string, string | undefined>, c?: { issue: (path: string, message: string) => void }): string {
  let out = ''
  let i = 0
  while (i < s.length) {
    const ch = s[i]
    if (ch !== '$' || (s[i + 1] !== '$' && s[i + 1] !== '{')) { out += ch; i++; continue }
    if (s[i + 1] === '$') { out += '$'; i += 2; continue }
    const end = s.indexOf('}', i + 2)
    if (end < 0) { c?.issue(path, `'\${' without a closing '}' (write $$ for a literal $)`); return s }
    const body = s.slice(i + 2, end)
    const m = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s.exec(body)
    if (m === null) {
      c?.issue(path, `bad variable reference '\${${body}}' (write \${NAME} or \${NAME:-default}; $$ for a literal $)`)
    } else {
      const value = env[m[1]]
      if (m[2] !== undefined) out += value === undefined || value === '' ? m[2] : value
      else if (value === undefined) c?.issue(path, `environment variable ${m[1]} is not set (or give a default: \${${m[1]}:-value})`)
      else out += value
    }
    i = end + 1
  }
  return out
}

// ---- scalar readers: each returns undefined after recording an issue ----

function map (c: Check, v: unknown, path: string, what = 'a map'): Obj | undefined {
  if (isMap(v)) return v
  c.issue(path, `expected ${what}, got ${kind(v)}`)
  return undefined
}

function known (c: Check, m: Obj, path: string, fields: readonly string[]): void {
  for (const k of Object.keys(m)) {
    if (!fields.includes(k)) c.issue(at(path, k), `unknown field '${k}' (known: ${fields.join(', ')})`)
  }
}

function str (c: Check, v: unknown, path: string): string | undefined {
  if (typeof v === 'string' && v !== '') return v
  c.issue(path, typeof v === 'string' ? 'expected a non-empty string' : `expected a string, got ${kind(v)}`)
  return undefined
}

function strList (c: Check, v: unknown, path: string): string[] | undefined {
  if (!Array.isArray(v)) { c.issue(path, `expected a list of strings, got ${kind(v)}`); return undefined }
  let ok = true
  v.forEach((x, i) => {
    if (typeof x === 'string') return
    ok = false
    const hint = typeof x === 'number' || typeof x === 'boolean' ? ` (quote it: "${String(x)}")` : ''
    c.issue(item(path, i), `expected a string, got ${kind(x)}${hint}`)
  })
  return ok ? v as string[] : undefined
}

function oneOf<T extends string> (c: Check, v: unknown, path: string, allowed: readonly T[], what: string): T | undefined {
  if (typeof v === 'string' && (allowed as readonly string[]).includes(v)) return v as T
  c.issue(path, typeof v === 'string' ? `unknown ${what} '${v}' (allowed: ${allowed.join(', ')})` : `expected one of ${allowed.join(', ')}, got ${kind(v)}`)
  return undefined
}

/** A whole number; a string of digits counts, so `${PORT}` works. */
function int (c: Check, v: unknown, path: string, min: number, max: number): number | undefined {
  const n = typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : v
  if (typeof n === 'number' && Number.isInteger(n) && n >= min && n <= max) return n
  c.issue(path, `expected a whole number from ${min} to ${max}, got ${kind(v)}`)
  return undefined
}

function cores (c: Check, v: unknown, path: string): number | undefined {
  if (typeof v !== 'number' && typeof v !== 'string') { c.issue(path, `expected a number of cores (1, 0.5), got ${kind(v)}`); return undefined }
  try {
    const n = parseCores(v)
    if (n > 0) return n
    c.issue(path, `cores must be more than 0, got ${String(v)}`)
  } catch (err) {
    c.issue(path, (err as Error).message)
  }
  return undefined
}

/**
 * A size in bytes: a string with a unit (parseSize: 512MiB, 2GB, 1.5GiB), or a bare number read
 * by BARE_SIZE_MIB_FROM's rule, noted.
 */
function size (c: Check, v: unknown, path: string, positive: boolean): number | undefined {
  let bytes: number | undefined
  const bare = typeof v === 'number' ? v : typeof v === 'string' && /^\s*-?\d+(\.\d+)?\s*$/.test(v) ? Number(v) : undefined
  if (bare !== undefined) {
    if (!Number.isFinite(bare) || bare < 0) { c.issue(path, `a size cannot be negative, got ${String(v)}`); return undefined }
    if (bare >= BARE_SIZE_MIB_FROM) {
      bytes = Math.floor(bare * MiB)
      const gib = bare / 1024
      c.note(path, `bare ${bare} read as ${bare} MiB; write ${bare}MiB${Number.isInteger(gib) ? ` or ${gib}GiB` : ''} to say so`)
    } else {
      bytes = Math.floor(bare * GiB)
      if (bare !== 0) c.note(path, `bare ${bare} read as ${bare} GiB; write ${bare}GiB (or ${bare}GB for 10^9 bytes) to say so`)
    }
  } else if (typeof v === 'string') {
    if (!/^\s*\d+(\.\d+)?\s*[a-zA-Z]+\s*$/.test(v)) { c.issue(path, `not a size: '${v}' (examples: 512MiB, 2GB)`); return undefined }
    try { bytes = parseSize(v) } catch (err) { c.issue(path, (err as Error).message); return undefined }
  } else {
    c.issue(path, `expected a size (512MiB, 2GB), got ${kind(v)}`)
    return undefined
  }
  if (positive && bytes <= 0) { c.issue(path, `must be more than 0, got ${String(v)}`); return undefined }
  return bytes
}

/** A duration in ms; a unit is required (a bare number could be seconds or ms). */
function duration (c: Check, v: unknown, path: string): number | undefined {
  if (typeof v === 'number' || (typeof v === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(v))) {
    c.issue(path, `a duration needs a unit: 30s, 5m (got ${String(v)})`)
    return undefined
  }
  if (typeof v !== 'string') { c.issue(path, `expected a duration (30s, 5m), got ${kind(v)}`); return undefined }
  try { return parseDuration(v) } catch (err) { c.issue(path, (err as Error).message); return undefined }
}

/** A scalar as a string: environment values and labels (`PORT: 80`, `debug: true`). */
function scalarString (c: Check, v: unknown, path: string): string | undefined {
  if (typeof v === 'string') return v
  if (typeof v === 'number' || typeof v === 'boolean') return String(v)
  c.issue(path, `expected a string, number or boolean, got ${kind(v)}`)
  return undefined
}

/** Zod's issues from the allocation spec's schemas, at the paths the user wrote. */
function zodIssues (c: Check, error: z.ZodError, path: string, names: Record<string, string>): void {
  for (const i of error.issues) {
    const keys = i.code === 'unrecognized_keys' ? [...i.path, i.keys[0]] : i.path
    c.issue([path, ...keys.map(k => names[String(k)] ?? String(k))].join('.'), i.message)
  }
}

// ---- the file ----

interface Pending {
  /** Health-check port of an http/tcp check, to find among the node's ports. */
  healthPort?: number
}

function validate (top: Obj, c: Check): Ensemble {
  if (top.version === undefined) c.issue('version', `required: "${ENSEMBLE_VERSION}"`)
  else if (top.version !== ENSEMBLE_VERSION) c.issue('version', `unsupported version ${JSON.stringify(top.version)} (supported: "${ENSEMBLE_VERSION}")`)

  const allocations: Record<string, EnsembleAllocation> = {}
  const pending = new Map<string, Pending>()
  const allocMap = top.allocations === undefined ? (c.issue('allocations', 'required: a map of allocation name to allocation'), undefined) : map(c, top.allocations, 'allocations')
  if (allocMap !== undefined && Object.keys(allocMap).length === 0) c.issue('allocations', 'no allocations: an ensemble runs at least one')
  for (const [name, v] of Object.entries(allocMap ?? {})) {
    const path = at('allocations', name)
    if (!NAME.test(name) || name.length > MAX_NAME) c.issue(path, `not a valid name '${name}' (letters, digits, _ and -, starting with a letter or digit, at most ${MAX_NAME})`)
    const p: Pending = {}
    const a = allocation(c, name, v, path, p)
    if (a !== undefined) { allocations[name] = a; pending.set(name, p) }
  }
  dependencies(c, allocations, allocMap === undefined ? [] : Object.keys(allocMap))

  const nodes: Record<string, EnsembleNode> = {}
  const placedOn = new Map<string, string>()
  const nodeMap = top.nodes === undefined ? (c.issue('nodes', 'required: a map of node name to node'), undefined) : map(c, top.nodes, 'nodes')
  if (nodeMap !== undefined && Object.keys(nodeMap).length === 0) c.issue('nodes', 'no nodes: every allocation must be placed on one')
  for (const [name, v] of Object.entries(nodeMap ?? {})) {
    const path = at('nodes', name)
    if (!NAME.test(name) || name.length > MAX_NAME) c.issue(path, `not a valid name '${name}' (letters, digits, _ and -, starting with a letter or digit, at most ${MAX_NAME})`)
    const n = node(c, name, v, path, allocMap ?? {}, placedOn)
    if (n !== undefined) nodes[name] = n
  }
  if (nodeMap !== undefined) {
    for (const name of Object.keys(allocMap ?? {})) {
      if (!placedOn.has(name)) c.issue(at('allocations', name), 'not placed on any node (every allocation runs on exactly one node)')
    }
  }
  // An http/tcp check connects to one of the allocation's ports: its private side, on its node.
  for (const [name, p] of pending) {
    const on = placedOn.get(name)
    if (p.healthPort === undefined || on === undefined || nodes[on] === undefined) continue
    const mine = nodes[on].ports.filter(x => x.allocation === name && x.protocol === 'tcp').map(x => x.private)
    if (!mine.includes(p.healthPort)) {
      c.issue(at(at('allocations', name), 'healthcheck.port'), `port ${p.healthPort} is not a private tcp port of ${name} on node ${on} (${mine.join(', ') || 'none'})`)
    }
  }

  const supervisor = supervisorOf(c, top.supervisor)
  if (top.subnet !== undefined) c.ignored.push('subnet')

  return {
    version: ENSEMBLE_VERSION,
    allocations,
    nodes,
    supervisor,
    ignored: c.ignored,
    notes: c.notes
  }
}

function allocation (c: Check, name: string, v: unknown, path: string, p: Pending): EnsembleAllocation | undefined {
  const m = map(c, v, path, 'a map (an allocation)')
  if (m === undefined) return undefined
  known(c, m, path, ALLOCATION_FIELDS)

  let executor: EnsembleAllocation['executor'] | undefined
  if (m.executor === undefined) c.issue(at(path, 'executor'), `required: ${EXECUTORS.join(' or ')}`)
  else if (typeof m.executor === 'string' && EXECUTOR_ALIASES[m.executor] !== undefined) executor = EXECUTOR_ALIASES[m.executor]
  else executor = oneOf(c, m.executor, at(path, 'executor'), EXECUTORS, 'executor')

  // DMS's default: an allocation is a service unless it says it is a task.
  const type = m.type === undefined ? 'service' : oneOf(c, m.type, at(path, 'type'), ['service', 'task'] as const, 'type')

  const resources = resourcesOf(c, m.resources, at(path, 'resources'))
  const execution = executionOf(c, m.execution, at(path, 'execution'), executor)

  let dnsName: string | undefined
  const dnsUnder = m.dns_name === undefined ? undefined : str(c, m.dns_name, at(path, 'dns_name'))
  const dnsFlat = m.dnsname === undefined ? undefined : str(c, m.dnsname, at(path, 'dnsname'))
  if (dnsUnder !== undefined && dnsFlat !== undefined && dnsUnder !== dnsFlat) {
    // DMS's nginx-with-redundancy.yaml gives both, differently: dns_name is the documented field.
    c.ignored.push(at(path, 'dnsname'))
    c.note(at(path, 'dnsname'), `'${dnsFlat}' ignored: dns_name '${dnsUnder}' wins`)
  }
  const chosen = dnsUnder ?? dnsFlat
  if (chosen !== undefined) {
    if (DNS_NAME.test(chosen) && chosen.length <= MAX_DNS_NAME) dnsName = chosen
    else c.issue(at(path, dnsUnder !== undefined ? 'dns_name' : 'dnsname'), `not a DNS name: '${chosen}' (letters, digits, - and ., starting and ending with a letter or digit)`)
  }

  let healthcheck: HealthCheck | undefined
  if (m.healthcheck !== undefined) {
    if (type === 'task') c.issue(at(path, 'healthcheck'), `health checks apply to services; ${name} is a task`)
    else healthcheck = healthcheckOf(c, m.healthcheck, at(path, 'healthcheck'), p)
  }

  let dependsOn: string[] = []
  if (m.depends_on !== undefined) {
    const list = strList(c, m.depends_on, at(path, 'depends_on'))
    if (list !== undefined) {
      list.forEach((d, i) => { if (list.indexOf(d) !== i) c.issue(item(at(path, 'depends_on'), i), `${d} is listed twice`) })
      dependsOn = [...new Set(list)]
    }
  }

  let restart: RestartPolicy | undefined
  if (m.restart !== undefined) restart = restartOf(c, m.restart, at(path, 'restart'), type)

  const failureRecovery = m.failure_recovery === undefined ? undefined : oneOf(c, m.failure_recovery, at(path, 'failure_recovery'), FAILURE_RECOVERY, 'failure_recovery')

  // DMS's key and provisioning fields: read, not acted on by dms (yet); the plan shows them.
  if (m.keys !== undefined) c.ignored.push(at(path, 'keys'))
  if (m.provision !== undefined) c.ignored.push(at(path, 'provision'))

  return {
    name,
    executor: executor ?? 'process',
    type: type ?? 'service',
    resources: resources ?? { cpuCores: 0, ramBytes: 0, diskBytes: 0, gpus: [] },
    execution: execution ?? { env: {} },
    ...(dnsName !== undefined ? { dnsName } : {}),
    ...(healthcheck !== undefined ? { healthcheck } : {}),
    dependsOn,
    ...(restart !== undefined ? { restart } : {}),
    ...(failureRecovery !== undefined ? { failureRecovery } : {})
  }
}

function resourcesOf (c: Check, v: unknown, path: string): EnsembleAllocation['resources'] | undefined {
  if (v === undefined) { c.issue(path, 'required: cpu.cores and ram.size at least'); return undefined }
  const m = map(c, v, path)
  if (m === undefined) return undefined
  known(c, m, path, RESOURCE_FIELDS)
  const one = (key: 'cpu' | 'ram' | 'disk', field: string, required: boolean): unknown => {
    const p = at(path, key)
    if (m[key] === undefined) {
      if (required) c.issue(at(p, field), `required${key === 'cpu' ? ' (e.g. 1 or 0.5)' : ' (e.g. 512MiB)'}`)
      return undefined
    }
    const sub = map(c, m[key], p)
    if (sub === undefined) return undefined
    known(c, sub, p, [field])
    if (sub[field] === undefined) c.issue(at(p, field), 'required')
    return sub[field]
  }
  const rawCores = one('cpu', 'cores', true)
  const rawRam = one('ram', 'size', true)
  const rawDisk = one('disk', 'size', false)
  const cpuCores = rawCores === undefined ? undefined : cores(c, rawCores, at(path, 'cpu.cores'))
  const ramBytes = rawRam === undefined ? undefined : size(c, rawRam, at(path, 'ram.size'), true)
  const diskBytes = rawDisk === undefined ? 0 : size(c, rawDisk, at(path, 'disk.size'), false)
  const gpus: GpuRequest[] = []
  if (m.gpus !== undefined && m.gpus !== null) {
    if (!Array.isArray(m.gpus)) c.issue(at(path, 'gpus'), `expected a list of gpus ({vram, vendor, model}), got ${kind(m.gpus)}`)
    else {
      m.gpus.forEach((g, i) => {
        const gp = item(at(path, 'gpus'), i)
        const gm = map(c, g, gp, 'a map ({vram, vendor, model})')
        if (gm === undefined) return
        known(c, gm, gp, GPU_FIELDS)
        const req: GpuRequest = {}
        if (gm.vram !== undefined) { const b = size(c, gm.vram, at(gp, 'vram'), true); if (b !== undefined) req.vramBytes = b }
        if (gm.vendor !== undefined) { const s = str(c, gm.vendor, at(gp, 'vendor')); if (s !== undefined) req.vendor = s }
        if (gm.model !== undefined) { const s = str(c, gm.model, at(gp, 'model')); if (s !== undefined) req.model = s }
        gpus.push(req)
      })
    }
  }
  if (cpuCores === undefined || ramBytes === undefined || diskBytes === undefined) return undefined
  return { cpuCores, ramBytes, diskBytes, gpus }
}

function executionOf (c: Check, v: unknown, path: string, executor: EnsembleAllocation['executor'] | undefined): EnsembleAllocation['execution'] | undefined {
  if (v === undefined) { c.issue(path, 'required: what to run (docker: image; process: cmd)'); return undefined }
  const m = map(c, v, path)
  if (m === undefined) return undefined
  known(c, m, path, EXECUTION_FIELDS)
  const typeName = typeof m.type === 'string' ? EXECUTOR_ALIASES[m.type] ?? m.type : m.type
  if (m.type !== undefined && executor !== undefined && typeName !== executor) {
    c.issue(at(path, 'type'), `execution type ${JSON.stringify(m.type)} does not match the allocation's executor '${executor}'`)
  }
  const image = m.image === undefined ? undefined : str(c, m.image, at(path, 'image'))
  const list = (key: string): string[] | undefined => {
    if (m[key] === undefined) return undefined
    const l = strList(c, m[key], at(path, key))
    return l !== undefined && l.length > 0 ? l : undefined
  }
  const cmd = list('cmd')
  const args = list('args')
  const entrypoint = list('entrypoint')
  // DMS: cmd, then args after it; args alone are the whole command.
  const command = cmd !== undefined ? [...cmd, ...(args ?? [])] : args
  if (executor === 'process' || executor === 'vm') {
    if (m.image !== undefined) c.issue(at(path, 'image'), `the ${executor} executor runs no images`)
    if (m.entrypoint !== undefined) c.issue(at(path, 'entrypoint'), `the ${executor} executor has no entrypoint: put the whole argv in cmd`)
    if (command === undefined && m.cmd === undefined && m.args === undefined) c.issue(at(path, 'cmd'), `required: the ${executor} executor needs a command (cmd or args)`)
  }
  if (executor === 'docker' && m.image === undefined) c.issue(at(path, 'image'), 'required: the docker executor needs an image')
  const env = environmentOf(c, m.environment, at(path, 'environment'))
  const workingDir = m.working_directory === undefined ? undefined : str(c, m.working_directory, at(path, 'working_directory'))
  return {
    ...(image !== undefined && executor === 'docker' ? { image } : {}),
    ...(command !== undefined ? { command } : {}),
    ...(entrypoint !== undefined && executor === 'docker' ? { entrypoint } : {}),
    env,
    ...(workingDir !== undefined ? { workingDir } : {})
  }
}

/** A map of name → scalar, or Docker compose's list of `NAME=value`. */
function environmentOf (c: Check, v: unknown, path: string): Record<string, string> {
  const env: Record<string, string> = {}
  if (v === undefined || v === null) return env
  const put = (name: string, value: string, p: string): void => {
    if (!ENV_NAME.test(name)) c.issue(p, `not an environment variable name: '${name}' (letters, digits and _, not starting with a digit)`)
    else if (name.startsWith('DMS_')) c.issue(p, `${name}: names starting with DMS_ are set by dms itself`)
    else if (name in env) c.issue(p, `${name} is given twice`)
    else env[name] = value
  }
  if (Array.isArray(v)) {
    v.forEach((x, i) => {
      const p = item(path, i)
      if (typeof x !== 'string') { c.issue(p, `expected NAME=value, got ${kind(x)}`); return }
      const eq = x.indexOf('=')
      if (eq <= 0) { c.issue(p, `expected NAME=value, got '${x}'`); return }
      put(x.slice(0, eq), x.slice(eq + 1), p)
    })
  } else if (isMap(v)) {
    for (const [k, x] of Object.entries(v)) {
      const s = scalarString(c, x, at(path, k))
      if (s !== undefined) put(k, s, at(path, k))
    }
  } else {
    c.issue(path, `expected a map of NAME: value or a list of NAME=value, got ${kind(v)}`)
  }
  return env
}

function healthcheckOf (c: Check, v: unknown, path: string, p: Pending): HealthCheck | undefined {
  const m = map(c, v, path)
  if (m === undefined) return undefined
  const before = c.issues.length
  const type = m.type === undefined
    ? (c.issue(at(path, 'type'), 'required: command, http or tcp'), undefined)
    : oneOf(c, m.type, at(path, 'type'), ['command', 'http', 'tcp'] as const, 'health check type')
  if (type === undefined) return undefined
  known(c, m, path, HC_FIELDS[type])
  const input: Obj = { type }
  const names: Record<string, string> = { intervalMs: 'interval', timeoutMs: 'timeout', startPeriodMs: 'start_period' }
  if (type === 'command') {
    // DMS writes exec and response {type: string, value}; dms's own spelling is command and contains.
    if (m.exec !== undefined && m.command !== undefined) c.issue(at(path, 'command'), 'give exec or command, not both')
    const key = m.exec !== undefined ? 'exec' : 'command'
    names.command = key
    if (m[key] === undefined) c.issue(at(path, 'exec'), 'required: the command to run, e.g. [pg_isready]')
    else {
      const cmd = strList(c, m[key], at(path, key))
      if (cmd !== undefined) input.command = cmd
    }
    if (m.response !== undefined && m.contains !== undefined) c.issue(at(path, 'contains'), 'give response or contains, not both')
    if (m.response !== undefined) {
      const r = map(c, m.response, at(path, 'response'), 'a map {type: string, value}')
      if (r !== undefined) {
        known(c, r, at(path, 'response'), ['type', 'value'])
        if (r.type !== undefined && r.type !== 'string') c.issue(at(path, 'response.type'), `unsupported response type ${JSON.stringify(r.type)} (supported: string: the output contains value)`)
        const s = r.value === undefined ? (c.issue(at(path, 'response.value'), 'required'), undefined) : scalarString(c, r.value, at(path, 'response.value'))
        if (s !== undefined) input.contains = s
        names.contains = 'response.value'
      }
    } else if (m.contains !== undefined) {
      const s = scalarString(c, m.contains, at(path, 'contains'))
      if (s !== undefined) input.contains = s
    }
  } else {
    if (m.port === undefined) c.issue(at(path, 'port'), 'required: one of the allocation\'s private ports')
    else {
      const port = int(c, m.port, at(path, 'port'), 1, 65535)
      if (port !== undefined) { input.port = port; p.healthPort = port }
    }
    if (type === 'http' && m.path !== undefined) {
      const s = str(c, m.path, at(path, 'path'))
      if (s !== undefined) input.path = s
    }
  }
  if (m.interval !== undefined) input.intervalMs = duration(c, m.interval, at(path, 'interval'))
  if (m.timeout !== undefined) input.timeoutMs = duration(c, m.timeout, at(path, 'timeout'))
  if (m.start_period !== undefined) input.startPeriodMs = duration(c, m.start_period, at(path, 'start_period'))
  if (m.retries !== undefined) input.retries = int(c, m.retries, at(path, 'retries'), 1, 100)
  if (c.issues.length > before) return undefined
  const r = HealthCheckSchema.safeParse(input)
  if (r.success) return r.data
  zodIssues(c, r.error, path, names)
  return undefined
}

function restartOf (c: Check, v: unknown, path: string, type: 'service' | 'task' | undefined): RestartPolicy | undefined {
  const m = map(c, v, path, 'a map {policy, max_restarts, window, backoff}')
  if (m === undefined) return undefined
  const before = c.issues.length
  known(c, m, path, RESTART_FIELDS)
  const input: Obj = {}
  if (m.policy === undefined) c.issue(at(path, 'policy'), 'required: never, on-failure or always')
  else input.policy = oneOf(c, m.policy, at(path, 'policy'), ['never', 'on-failure', 'always'] as const, 'restart policy')
  if (m.max_restarts !== undefined) input.maxRestarts = int(c, m.max_restarts, at(path, 'max_restarts'), 0, 1000)
  if (m.window !== undefined) input.windowMs = duration(c, m.window, at(path, 'window'))
  if (m.backoff !== undefined) {
    const b = map(c, m.backoff, at(path, 'backoff'), 'a map {base, max}')
    if (b !== undefined) {
      known(c, b, at(path, 'backoff'), ['base', 'max'])
      const backoff: Obj = {}
      if (b.base !== undefined) backoff.baseMs = duration(c, b.base, at(path, 'backoff.base'))
      if (b.max !== undefined) backoff.maxMs = duration(c, b.max, at(path, 'backoff.max'))
      input.backoff = backoff
    }
  }
  if (c.issues.length > before) return undefined
  const r = RestartPolicySchema.safeParse(input)
  if (!r.success) {
    zodIssues(c, r.error, path, { maxRestarts: 'max_restarts', windowMs: 'window', baseMs: 'base', maxMs: 'max' })
    return undefined
  }
  if (type === 'task' && r.data.policy !== 'never') { c.issue(at(path, 'policy'), 'a task runs once: only policy never applies'); return undefined }
  if (r.data.backoff.maxMs < r.data.backoff.baseMs) { c.issue(at(path, 'backoff.max'), 'must be at least backoff.base'); return undefined }
  return r.data
}

/** Unknown names, self-dependencies, and each cycle once, named in full. */
function dependencies (c: Check, allocations: Record<string, EnsembleAllocation>, declared: string[]): void {
  const edges = new Map<string, string[]>()
  for (const [name, a] of Object.entries(allocations)) {
    const path = at(at('allocations', name), 'depends_on')
    const ok: string[] = []
    a.dependsOn.forEach((d, i) => {
      if (d === name) c.issue(item(path, i), `${name} cannot depend on itself`)
      else if (!declared.includes(d)) c.issue(item(path, i), `unknown allocation '${d}' (defined: ${declared.join(', ')})`)
      else ok.push(d)
    })
    edges.set(name, ok)
  }
  const state = new Map<string, 'open' | 'done'>()
  const stack: string[] = []
  const seen = new Set<string>()
  const dfs = (n: string): void => {
    state.set(n, 'open')
    stack.push(n)
    for (const d of edges.get(n) ?? []) {
      const s = state.get(d)
      if (s === 'open') {
        const cycle = stack.slice(stack.indexOf(d))
        const key = [...cycle].sort().join('\0')
        if (!seen.has(key)) {
          seen.add(key)
          c.issue(at(at('allocations', d), 'depends_on'), `a cycle: ${[...cycle, d].join(' → ')}`)
        }
      } else if (s === undefined) dfs(d)
    }
    stack.pop()
    state.set(n, 'done')
  }
  for (const n of edges.keys()) if (!state.has(n)) dfs(n)
}

function node (c: Check, name: string, v: unknown, path: string, allocMap: Obj, placedOn: Map<string, string>): EnsembleNode | undefined {
  const m = map(c, v, path, 'a map (a node)')
  if (m === undefined) return undefined
  known(c, m, path, NODE_FIELDS)
  const defined = Object.keys(allocMap)
  const allocations: string[] = []
  if (m.allocations === undefined) c.issue(at(path, 'allocations'), 'required: the allocations that run on this node')
  else {
    const list = strList(c, m.allocations, at(path, 'allocations'))
    if (list !== undefined && list.length === 0) c.issue(at(path, 'allocations'), 'empty: a node runs at least one allocation')
    list?.forEach((a, i) => {
      const p = item(at(path, 'allocations'), i)
      const other = placedOn.get(a)
      if (!(a in allocMap)) c.issue(p, `unknown allocation '${a}' (defined: ${defined.join(', ')})`)
      else if (other === name) c.issue(p, `${a} is listed twice`)
      else if (other !== undefined) c.issue(p, `${a} is already placed on node ${other} (an allocation runs on exactly one node)`)
      else { placedOn.set(a, name); allocations.push(a) }
    })
  }

  const ports: EnsemblePort[] = []
  if (m.ports !== undefined && m.ports !== null) {
    if (!Array.isArray(m.ports)) c.issue(at(path, 'ports'), `expected a list of ports ({public, private, allocation}), got ${kind(m.ports)}`)
    else {
      const publics = new Set<string>()
      const privates = new Set<string>()
      m.ports.forEach((x, i) => {
        const pp = item(at(path, 'ports'), i)
        const pm = map(c, x, pp, 'a map {public, private, allocation}')
        if (pm === undefined) return
        known(c, pm, pp, PORT_FIELDS)
        const pub = pm.public === undefined ? undefined : int(c, pm.public, at(pp, 'public'), 1, 65535)
        const priv = pm.private === undefined ? (c.issue(at(pp, 'private'), 'required: the port inside the allocation'), undefined) : int(c, pm.private, at(pp, 'private'), 1, 65535)
        const protocol = pm.protocol === undefined ? 'tcp' : oneOf(c, pm.protocol, at(pp, 'protocol'), ['tcp', 'udp'] as const, 'protocol')
        let alloc: string | undefined
        if (pm.allocation === undefined) c.issue(at(pp, 'allocation'), `required: one of this node's allocations (${allocations.join(', ')})`)
        else {
          const a = str(c, pm.allocation, at(pp, 'allocation'))
          if (a !== undefined) {
            const on = placedOn.get(a)
            if (allocations.includes(a)) alloc = a
            else if (!(a in allocMap)) c.issue(at(pp, 'allocation'), `unknown allocation '${a}' (defined: ${defined.join(', ')})`)
            else if (on !== undefined && on !== name) c.issue(at(pp, 'allocation'), `${a} runs on node ${on}, not on ${name}`)
            else c.issue(at(pp, 'allocation'), `${a} is not one of this node's allocations (${allocations.join(', ')})`)
          }
        }
        if (pub !== undefined && protocol !== undefined) {
          const k = `${pub}/${protocol}`
          if (publics.has(k)) c.issue(at(pp, 'public'), `public port ${k} is given twice on node ${name}`)
          publics.add(k)
        }
        if (priv !== undefined && protocol !== undefined && alloc !== undefined) {
          const k = `${alloc} ${priv}/${protocol}`
          if (privates.has(k)) c.issue(at(pp, 'private'), `private port ${priv}/${protocol} of ${alloc} is given twice`)
          privates.add(k)
        }
        if (priv !== undefined && protocol !== undefined && alloc !== undefined) {
          ports.push({ ...(pub !== undefined ? { public: pub } : {}), private: priv, allocation: alloc, protocol })
        }
      })
    }
  }

  let location: EnsembleNode['location']
  if (m.location !== undefined) {
    const lp = at(path, 'location')
    const lm = map(c, m.location, lp, 'a map {accept, reject}')
    if (lm !== undefined) {
      known(c, lm, lp, LOCATION_FIELDS)
      location = { accept: places(c, lm.accept, at(lp, 'accept')), reject: places(c, lm.reject, at(lp, 'reject')) }
    }
  }

  const labels: Record<string, string> = {}
  if (m.labels !== undefined && m.labels !== null) {
    const lm = map(c, m.labels, at(path, 'labels'), 'a map of label: value')
    for (const [k, x] of Object.entries(lm ?? {})) {
      const s = scalarString(c, x, at(at(path, 'labels'), k))
      if (s !== undefined) labels[k] = s
    }
  }

  let peer: string | undefined
  if (m.peer !== undefined) {
    const s = str(c, m.peer, at(path, 'peer'))
    if (s !== undefined) {
      if (isPeer(s)) peer = s
      else c.issue(at(path, 'peer'), `not a peer id (12D3Koo…) or did:key (did:key:z…): '${s.length > 60 ? `${s.slice(0, 60)}…` : s}'`)
    }
  }

  const failureRecovery = m.failure_recovery === undefined ? undefined : oneOf(c, m.failure_recovery, at(path, 'failure_recovery'), FAILURE_RECOVERY, 'failure_recovery')
  // DMS's redundancy (replicas of a node): read, not acted on by dms.
  if (m.redundancy !== undefined) c.ignored.push(at(path, 'redundancy'))

  return {
    name,
    allocations,
    ports,
    ...(location !== undefined ? { location } : {}),
    labels,
    ...(peer !== undefined ? { peer } : {}),
    ...(failureRecovery !== undefined ? { failureRecovery } : {})
  }
}

/** Location prefixes: `EU/DE/Berlin` strings, or `{continent, country, city}` maps joined so. */
function places (c: Check, v: unknown, path: string): string[] {
  if (v === undefined || v === null) return []
  if (!Array.isArray(v)) { c.issue(path, `expected a list of locations (EU/DE or {continent, country, city}), got ${kind(v)}`); return [] }
  const out: string[] = []
  v.forEach((x, i) => {
    const p = item(path, i)
    if (typeof x === 'string' && x !== '') { out.push(x); return }
    const m = map(c, x, p, 'a location (EU/DE or {continent, country, city})')
    if (m === undefined) return
    known(c, m, p, PLACE_FIELDS)
    const parts: string[] = []
    let gap = false
    for (const f of PLACE_FIELDS) {
      if (m[f] === undefined) { gap = true; continue }
      if (gap) { c.issue(at(p, f), `${f} needs the wider places before it (continent, country, city)`); return }
      const s = scalarString(c, m[f], at(p, f))
      if (s !== undefined) parts.push(s)
    }
    if (parts.length === 0) c.issue(p, 'an empty location: give continent (and country, city)')
    else out.push(parts.join('/'))
  })
  return out
}

function isPeer (s: string): boolean {
  if (s.startsWith('did:')) return isDid(s)
  try { didFromPeerId(s); return true } catch { return false }
}

function supervisorOf (c: Check, v: unknown): Ensemble['supervisor'] {
  const out: Ensemble['supervisor'] = { ...DEFAULT_SUPERVISOR }
  if (v === undefined || v === null) return out
  const m = map(c, v, 'supervisor', 'a map {strategy, max_restarts, window}')
  if (m === undefined) return out
  known(c, m, 'supervisor', SUPERVISOR_FIELDS)
  if (m.strategy !== undefined) out.strategy = oneOf(c, m.strategy, 'supervisor.strategy', STRATEGIES, 'strategy') ?? out.strategy
  if (m.max_restarts !== undefined) out.maxRestarts = int(c, m.max_restarts, 'supervisor.max_restarts', 0, 1000) ?? out.maxRestarts
  if (m.window !== undefined) out.windowMs = duration(c, m.window, 'supervisor.window') ?? out.windowMs
  return out
}
