import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { InvalidConfig } from '../lib/errors.js'
import { parseDuration, parseSize } from '../lib/units.js'

/**
 * Node configuration: defaults ← `<data-dir>/config.json` ← `DMS_*` environment ← flags.
 * Every layer is validated by the same strict schema: an unknown key is refused by name.
 */
const Port = z.number().int().min(0).max(65535)
const Ports = z.strictObject({ min: Port.min(1), max: Port.min(1) })
const Limits = z.strictObject({
  perSenderRate: z.number().positive(),
  perSenderBurst: z.number().positive(),
  mailboxConcurrency: z.number().int().positive(),
  mailboxCapacity: z.number().int().nonnegative()
})
const fields = {
  listen: z.array(z.string().startsWith('/')).min(1),
  bootstrap: z.array(z.string().startsWith('/')),
  mdns: z.boolean(),
  apiPort: Port,
  maxFrameBytes: z.number().int().min(64 * 1024).max(64 * 1024 * 1024),
  helloIntervalMs: z.number().int().min(1000),
  /** How often a provider asks the orchestrators of remote ensembles it runs whether they still want them. */
  wantedCheckMs: z.number().int().min(100),
  signAllEnvelopes: z.boolean(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
}
export const ConfigSchema = z.strictObject({
  ...fields,
  ports: Ports.refine(p => p.min <= p.max, 'ports.min must not exceed ports.max'),
  limits: Limits
})
/** A layer (config.json, env, flags): every key optional, nested ones too; unknown keys refused. */
const LayerSchema = z.strictObject({ ...fields, ports: Ports.partial(), limits: Limits.partial() }).partial()
export type Config = z.infer<typeof ConfigSchema>
export type ConfigInput = { [K in keyof Config]?: Config[K] extends object ? (Config[K] extends unknown[] ? Config[K] : Partial<Config[K]>) : Config[K] }

export const DEFAULT_CONFIG: Config = {
  listen: ['/ip4/0.0.0.0/tcp/9000'],
  bootstrap: [],
  mdns: true,
  apiPort: 9999,
  maxFrameBytes: 4 * 1024 * 1024,
  helloIntervalMs: 30_000,
  wantedCheckMs: 60_000,
  signAllEnvelopes: false,
  ports: { min: 16384, max: 65535 },
  limits: { perSenderRate: 20_000, perSenderBurst: 20_000, mailboxConcurrency: 256, mailboxCapacity: 4096 },
  logLevel: 'info'
}

const list = (s: string): string[] => s.split(',').map(x => x.trim()).filter(x => x !== '')
const bool = (name: string, s: string): boolean => {
  if (/^(1|true|yes|on)$/i.test(s)) return true
  if (/^(0|false|no|off)$/i.test(s)) return false
  throw new InvalidConfig(`${name} must be true or false, got '${s}'`, { key: name })
}
const int = (name: string, s: string): number => {
  const n = Number(s)
  if (!Number.isInteger(n)) throw new InvalidConfig(`${name} must be an integer, got '${s}'`, { key: name })
  return n
}

/** The DMS_* variables that configure a node (DMS_HOME and DMS_PASSPHRASE are not config). */
const ENV: Record<string, (v: string) => ConfigInput> = {
  DMS_LISTEN: v => ({ listen: list(v) }),
  DMS_BOOTSTRAP: v => ({ bootstrap: list(v) }),
  DMS_MDNS: v => ({ mdns: bool('DMS_MDNS', v) }),
  DMS_API_PORT: v => ({ apiPort: int('DMS_API_PORT', v) }),
  DMS_MAX_FRAME: v => ({ maxFrameBytes: parseSize(v, 'DMS_MAX_FRAME') }),
  DMS_HELLO_INTERVAL: v => ({ helloIntervalMs: parseDuration(v, 'DMS_HELLO_INTERVAL') }),
  DMS_WANTED_CHECK: v => ({ wantedCheckMs: parseDuration(v, 'DMS_WANTED_CHECK') }),
  DMS_SIGN_ALL_ENVELOPES: v => ({ signAllEnvelopes: bool('DMS_SIGN_ALL_ENVELOPES', v) }),
  DMS_LOG_LEVEL: v => ({ logLevel: v as Config['logLevel'] })
}

export function envConfig (env: NodeJS.ProcessEnv = process.env): ConfigInput {
  let out: ConfigInput = {}
  for (const [k, f] of Object.entries(ENV)) {
    const v = env[k]
    if (v !== undefined && v !== '') out = { ...out, ...f(v) }
  }
  return out
}

export async function fileConfig (dataDir: string): Promise<ConfigInput> {
  const path = join(dataDir, 'config.json')
  let text: string
  try { text = await readFile(path, 'utf8') } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {}
    throw err
  }
  let json: unknown
  try { json = JSON.parse(text) } catch (err) { throw new InvalidConfig(`${path} is not valid JSON: ${(err as Error).message}`) }
  const r = LayerSchema.safeParse(json)
  if (!r.success) throw new InvalidConfig(`${path}: ${describeIssues(r.error)}`, { path })
  return r.data as ConfigInput
}

function describeIssues (e: z.ZodError): string {
  return e.issues.map(i => {
    if (i.code === 'unrecognized_keys') return `unknown key${i.keys.length > 1 ? 's' : ''} ${i.keys.map(k => `'${[...i.path, k].join('.')}'`).join(', ')}`
    return `${i.path.join('.') || '(root)'}: ${i.message}`
  }).join('; ')
}

/** Merges layers over the defaults and validates the result. */
export function resolveConfig (...layers: ConfigInput[]): Config {
  const merged: Record<string, unknown> = structuredClone(DEFAULT_CONFIG)
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer)) {
      if (v === undefined) continue
      const cur = merged[k]
      merged[k] = (typeof v === 'object' && !Array.isArray(v) && typeof cur === 'object' && cur !== null && !Array.isArray(cur)) ? { ...cur, ...v } : v
    }
  }
  const r = ConfigSchema.safeParse(merged)
  if (!r.success) throw new InvalidConfig(`invalid configuration: ${describeIssues(r.error)}`)
  return r.data
}

export async function loadConfig (dataDir: string, flags: ConfigInput = {}, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  return resolveConfig(await fileConfig(dataDir), envConfig(env), flags)
}
