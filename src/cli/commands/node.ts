import type { Command } from 'commander'
import { InvalidArgument } from '../../lib/errors.js'
import { parseCores, parseDuration, parseSize } from '../../lib/units.js'
import { NODE_STATES, parseLabel } from '../../services/node-state/index.js'
import { LOG_LEVELS, type LogLevel } from '../../lib/log.js'
import { callBehavior } from '../call.js'
import { ago, emit, globalsFrom, table, withCommon, type OutputOpts } from '../common.js'

interface CommonOpts extends OutputOpts { dataDir?: string, context?: string, timeout?: string }
interface DestOpts extends CommonOpts { dest?: string }

const RESOURCE_VIEWS = ['onboarded', 'allocated', 'free'] as const
const collect = (v: string, prev: string[] = []): string[] => [...prev, v]

/** `0`, `0:8GiB` or `:8GiB` (any device with that much VRAM free). */
function parseGpuRequest (arg: string): { index?: number, vramBytes?: number } {
  const [i, vram, ...rest] = arg.split(':')
  const index = i.trim() === '' ? undefined : Number(i)
  if (rest.length > 0 || (index !== undefined && (!Number.isInteger(index) || index < 0)) || (index === undefined && vram === undefined)) {
    throw new InvalidArgument(`--gpu takes [<index>][:<vram>], e.g. 0, 0:8GiB or :8GiB; got '${arg}'`)
  }
  return { ...(index !== undefined ? { index } : {}), ...(vram !== undefined ? { vramBytes: parseSize(vram, '--gpu') } : {}) }
}

function parseLevel (l: string, flag: string): LogLevel {
  if (!(LOG_LEVELS as readonly string[]).includes(l)) throw new InvalidArgument(`${flag}: unknown log level '${l}' (one of ${LOG_LEVELS.join(', ')})`, { field: flag.slice(2) })
  return l as LogLevel
}

/** `dms node state|label|status|hardware|resources|logger`. */
export function register (program: Command): void {
  const node = program.command('node').description('this node: state, labels, status, hardware, resources')

  withCommon(node.command('state [state]'))
    .description(`the node state, or set it (${NODE_STATES.join(' | ')})`)
    .action(async (state: string | undefined, o: CommonOpts) => {
      if (state === undefined) {
        const s = await callBehavior<{ state: string, stateSince: number }>(globalsFrom(o), '/dms/node/status', {})
        emit(o, { state: s.state, since: new Date(s.stateSince).toISOString() }, v => `${v.state} (since ${ago(v.since)})`)
        return
      }
      if (!(NODE_STATES as readonly string[]).includes(state)) {
        throw new InvalidArgument(`unknown node state '${state}' (one of ${NODE_STATES.join(', ')})`)
      }
      emit(o, await callBehavior(globalsFrom(o), '/dms/node/state/set', { state }))
    })

  withCommon(node.command('logger'))
    .description('the logging configuration; with --level or --part, change it at run time (until the daemon restarts)')
    .option('--level <level>', `the default level (${LOG_LEVELS.join(' | ')})`)
    .option('--part <part=level>', 'one part\'s level, e.g. network=debug (part=default: back to the default); repeatable', collect)
    .addHelpText('after', '\nExamples:\n  dms node logger\n  dms node logger --level debug\n  dms node logger --part api=debug --part hello=warn')
    .action(async (o: CommonOpts & { level?: string, part?: string[] }) => {
      const level = o.level === undefined ? undefined : parseLevel(o.level, '--level')
      const parts = o.part === undefined
        ? undefined
        : Object.fromEntries(o.part.map(p => {
          const [name, l, ...rest] = p.split('=')
          if (l === undefined || rest.length > 0 || name === '') throw new InvalidArgument(`--part takes <part>=<level>, got '${p}'`, { field: 'part' })
          return [name, l === 'default' ? null : parseLevel(l, '--part')]
        }))
      const config = await callBehavior<{ level: string, parts: Record<string, string> }>(globalsFrom(o), '/dms/node/logger/config', { ...(level !== undefined ? { level } : {}), ...(parts !== undefined ? { parts } : {}) })
      emit(o, config, v => [`level: ${v.level}`, ...Object.entries(v.parts).map(([p, l]) => `  ${p}: ${l}`)].join('\n'))
    })

  withCommon(node.command('labels'))
    .description('the node labels (set them with dms node label set)')
    .action(async (o: CommonOpts) => {
      const s = await callBehavior<{ labels: Record<string, string> }>(globalsFrom(o), '/dms/node/status', {})
      emit(o, { labels: s.labels }, v => table(['KEY', 'VALUE'], Object.entries(v.labels)))
    })

  const label = node.command('label').description('node labels (key=value) for placement constraints')
  withCommon(label.command('set <labels...>'))
    .description('add or replace labels: dms node label set zone=eu-west gpu=true')
    .action(async (args: string[], o: CommonOpts) => {
      const labels = Object.fromEntries(args.map(parseLabel))
      emit(o, await callBehavior(globalsFrom(o), '/dms/node/labels/set', { labels }))
    })
  withCommon(label.command('rm <keys...>'))
    .description('remove labels by key')
    .action(async (keys: string[], o: CommonOpts) => {
      emit(o, await callBehavior(globalsFrom(o), '/dms/node/labels/remove', { keys }))
    })

  withCommon(node.command('status'))
    .description('state, labels, onboarding, resources and a hardware summary')
    .option('--dest <peer>', 'ask another node (PeerId or did:key)')
    .action(async (o: DestOpts) => {
      emit(o, await callBehavior(globalsFrom(o), '/dms/node/status', {}, { dest: o.dest }))
    })

  withCommon(node.command('hardware'))
    .description('the machine\'s hardware spec, or its live usage with --usage')
    .option('--usage', 'live CPU %, RAM and disk used')
    .option('--dest <peer>', 'ask another node (PeerId or did:key)')
    .action(async (o: DestOpts & { usage?: boolean }) => {
      emit(o, await callBehavior(globalsFrom(o), o.usage === true ? '/dms/node/hardware/usage' : '/dms/node/hardware/spec', {}, { dest: o.dest }))
    })

  const resources = node.command('resources').description('the resource ledger: views, and reserve/commit/release by id')
  for (const view of RESOURCE_VIEWS) {
    withCommon(resources.command(view))
      .description(`${view} resources as a vector`)
      .option('--dest <peer>', 'ask another node (PeerId or did:key)')
      .action(async (o: DestOpts) => {
        emit(o, await callBehavior(globalsFrom(o), `/dms/node/resources/${view}`, {}, { dest: o.dest }))
      })
  }
  withCommon(resources.command('ledger'))
    .description('onboarded, live reservations, allocations, free and any deficit')
    .option('--dest <peer>', 'ask another node (PeerId or did:key)')
    .action(async (o: DestOpts) => {
      emit(o, await callBehavior(globalsFrom(o), '/dms/node/resources/ledger', {}, { dest: o.dest }))
    })
  withCommon(resources.command('reserve <id>'))
    .description('promise resources to <id> for --ttl')
    .option('--cpu <cores>', 'CPU cores (fractions allowed)', '0')
    .option('--ram <size>', 'RAM with its unit (512MiB, 4GiB, …)', '0B')
    .option('--disk <size>', 'disk with its unit', '0B')
    .option('--gpu <[index][:vram]>', 'a GPU: by index, by VRAM (:8GiB = any device with 8GiB free), or both (repeatable)', collect)
    .option('--ttl <duration>', 'how long the promise holds (e.g. 30s, 5m)', '1m')
    .action(async (id: string, o: CommonOpts & { cpu: string, ram: string, disk: string, gpu?: string[], ttl: string }) => {
      const resources = {
        cpuCores: parseCores(o.cpu),
        ramBytes: parseSize(o.ram, '--ram'),
        diskBytes: parseSize(o.disk, '--disk'),
        gpus: (o.gpu ?? []).map(parseGpuRequest)
      }
      emit(o, await callBehavior(globalsFrom(o), '/dms/node/resources/reserve', { id, resources, ttlMs: parseDuration(o.ttl, '--ttl') }))
    })
  for (const verb of ['commit', 'release'] as const) {
    withCommon(resources.command(`${verb} <id>`))
      .description(verb === 'commit' ? 'turn the reservation <id> into an allocation' : 'free the reservation or allocation <id>')
      .action(async (id: string, o: CommonOpts) => {
        emit(o, await callBehavior(globalsFrom(o), `/dms/node/resources/${verb}`, { id }))
      })
  }
}
