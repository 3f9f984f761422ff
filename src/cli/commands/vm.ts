import type { Command } from 'commander'
import { InvalidArgument } from '../../lib/errors.js'
import { formatSize, parseCores, parseSize } from '../../lib/units.js'
import type { AllocationView } from '../../services/provider/schemas.js'
import { callBehavior } from '../call.js'
import { ago, dim, emit, globalsFrom, table, withCommon, type OutputOpts } from '../common.js'

interface CommonOpts extends OutputOpts { dataDir?: string, context?: string, timeout?: string }
interface StartOpts extends CommonOpts { cpu: string, ram: string, type: string, env?: string[], kernel?: string, initrd?: string, rootfs?: string, bootArgs?: string }

const collect = (v: string, prev: string[] = []): string[] => [...prev, v]

/**
 * `dms vm start|stop|list`: DMS's `/dms/node/vm/{start/custom,stop,list}` from the shell. A VM is
 * an allocation like any other (`dms alloc logs|status` work on its id); these are the node's own
 * controls, so they need the node's capabilities.
 */
export function register (program: Command): void {
  const vm = program.command('vm').description('run commands in VMs on the local node (the vm executor: QEMU, this node\'s guest)')

  withCommon(vm.command('start'))
    .description('boot a VM running CMD as a vm allocation; prints the allocation')
    .usage('[options] -- CMD [ARG...]')
    .argument('<cmd...>', 'the command and its arguments in the guest (after --)')
    .option('--cpu <vcpus>', 'vCPUs (reserved on the node; a fraction rounds up in the VM)', '1')
    .option('--ram <size>', 'guest memory, at least 96MiB (what the guest needs to boot)', '128MiB')
    .option('--type <type>', 'service (kept running) | task (runs to completion)', 'service')
    .option('--env <KEY=VALUE>', 'an environment variable of the workload (repeatable)', collect)
    .option('--kernel <path>', 'a guest kernel of your own: a file on the node, under its image directories')
    .option('--initrd <path>', 'an initramfs of your own (speaking the dms guest protocol), under the image directories')
    .option('--rootfs <path>', 'a raw disk image, attached read-only (virtio), under the image directories')
    .option('--boot-args <args>', 'kernel arguments appended after the executor\'s own')
    .addHelpText('after', '\nExample:\n  dms vm start --ram 128MiB -- sh -c \'echo up; exec sleep 600\'')
    .action(async (cmd: string[], o: StartOpts) => {
      if (!['task', 'service'].includes(o.type)) throw new InvalidArgument(`unknown type '${o.type}' (task | service)`, { field: 'type' })
      const env = o.env === undefined
        ? undefined
        : Object.fromEntries(o.env.map(kv => {
          const i = kv.indexOf('=')
          if (i <= 0) throw new InvalidArgument(`--env takes KEY=VALUE; got '${kv}'`)
          return [kv.slice(0, i), kv.slice(i + 1)]
        }))
      const guest = Object.fromEntries(([['kernel', o.kernel], ['initrd', o.initrd], ['rootfs', o.rootfs], ['bootArgs', o.bootArgs]] as const).filter(([, v]) => v !== undefined))
      const request = { cmd, vcpus: parseCores(o.cpu), memory: parseSize(o.ram, '--ram'), type: o.type, ...(env !== undefined ? { env } : {}), ...guest }
      emit(o, await callBehavior<AllocationView>(globalsFrom(o), '/dms/node/vm/start/custom', request))
    })

  withCommon(vm.command('stop <id>'))
    .description('stop a vm allocation (SIGTERM in the guest, SIGKILL after the grace)')
    .option('--grace <ms>', 'grace before SIGKILL, in ms')
    .action(async (id: string, o: CommonOpts & { grace?: string }) => {
      const graceMs = o.grace === undefined ? undefined : Number(o.grace)
      if (graceMs !== undefined && (!Number.isInteger(graceMs) || graceMs < 0)) throw new InvalidArgument(`--grace takes a whole number of ms; got '${o.grace ?? ''}'`, { field: 'grace' })
      emit(o, await callBehavior<AllocationView>(globalsFrom(o), '/dms/node/vm/stop', { id, ...(graceMs !== undefined ? { graceMs } : {}) }))
    })

  withCommon(vm.command('list'))
    .description('the vm allocations on the local node')
    .action(async (o: CommonOpts) => {
      emit(o, await callBehavior<{ allocations: AllocationView[] }>(globalsFrom(o), '/dms/node/vm/list', {}), v => table(
        ['ID', 'STATUS', 'TYPE', 'VCPUS', 'RAM', 'STARTED', 'COMMAND'],
        v.allocations.map(a => [a.id, a.status, a.type, `${a.resources.cpuCores}`, formatSize(a.resources.ramBytes),
          a.startedAt !== undefined ? ago(a.startedAt) : dim('-'), (a.command ?? []).join(' ').slice(0, 40)])))
    })
}
