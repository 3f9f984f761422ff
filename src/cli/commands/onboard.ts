import type { Command } from 'commander'
import { InvalidArgument } from '../../lib/errors.js'
import { parseCores, parseSize } from '../../lib/units.js'
import { callBehavior } from '../call.js'
import { emit, globalsFrom, withCommon, type OutputOpts } from '../common.js'

interface CommonOpts extends OutputOpts { dataDir?: string, context?: string, timeout?: string }

const collect = (v: string, prev: string[] = []): string[] => [...prev, v]

/** `<index>[:<vram>]`, e.g. `0` (the whole device) or `1:8GiB`. */
export function parseGpuArg (arg: string): { index: number, vramBytes?: number } {
  const [i, vram, ...rest] = arg.split(':')
  const index = Number(i)
  if (rest.length > 0 || i.trim() === '' || !Number.isInteger(index) || index < 0) {
    throw new InvalidArgument(`--gpu takes <index>[:<vram>], e.g. 0 or 1:8GiB; got '${arg}'`)
  }
  return vram === undefined ? { index } : { index, vramBytes: parseSize(vram, '--gpu') }
}

/** `dms onboard …`, `dms onboard status`, `dms offboard [--force]`. */
export function register (program: Command): void {
  const onboard = withCommon(program.command('onboard'))
    .description('offer part of this machine to the network, or change the offer')
    .option('--cpu <cores>', 'CPU cores to offer (fractions allowed: 1.5)')
    .option('--ram <size>', 'RAM to offer, with its unit (512MiB, 4GiB, 20GB)')
    .option('--disk <size>', 'disk to offer on the data dir\'s filesystem, with its unit (100GiB)')
    .option('--gpu <index[:vram]>', 'GPU to offer, whole or only some VRAM (repeatable; default: every GPU, whole)', collect)
    .option('--no-gpu', 'offer no GPU')
    .option('--force', 'shrink below what is reserved (reservations are cancelled)')
    .action(async (o: CommonOpts & { cpu?: string, ram?: string, disk?: string, gpu?: string[] | false, force?: boolean }) => {
      const missing = (['cpu', 'ram', 'disk'] as const).filter(k => o[k] === undefined)
      if (missing.length > 0) throw new InvalidArgument(`dms onboard needs ${missing.map(m => `--${m}`).join(', ')} (or 'dms onboard status')`)
      const payload = {
        cpuCores: parseCores(o.cpu as string),
        ramBytes: parseSize(o.ram as string, '--ram'),
        diskBytes: parseSize(o.disk as string, '--disk'),
        // undefined: every GPU the machine has; false (--no-gpu): none.
        ...(o.gpu === false ? { gpus: [] } : o.gpu !== undefined ? { gpus: o.gpu.map(parseGpuArg) } : {}),
        ...(o.force === true ? { force: true } : {})
      }
      emit(o, await callBehavior(globalsFrom(o), '/dms/node/onboarding/onboard', payload))
    })

  withCommon(onboard.command('status'))
    .description('whether this machine is onboarded, with what and since when')
    .action(async (_o: CommonOpts, cmd: Command) => {
      // `onboard` declares the same flags, so commander may hand them to it: read both.
      const o = cmd.optsWithGlobals<CommonOpts>()
      emit(o, await callBehavior(globalsFrom(o), '/dms/node/onboarding/status', {}))
    })

  withCommon(program.command('offboard'))
    .description('withdraw this machine\'s offer')
    .option('--force', 'even while reservations or allocations hold resources (reservations are cancelled)')
    .action(async (o: CommonOpts & { force?: boolean }) => {
      emit(o, await callBehavior(globalsFrom(o), '/dms/node/onboarding/offboard', o.force === true ? { force: true } : {}))
    })
}
