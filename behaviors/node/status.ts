import { z } from 'zod'
import { LabelsSchema, NodeStateSchema } from '../../src/services/node-state/index.js'
import { ResourceVectorSchema } from '../../src/services/resources/index.js'
import { defineBehavior } from '../define.js'

/**
 * Everything an operator checks first, in one reply. Built from the state, ledger and hardware
 * services only, so it cannot carry a key, passphrase or token: none of them is reachable here.
 */
export default defineBehavior({
  path: '/dms/node/status',
  describe: 'Node state, labels, onboarding, resources (onboarded, reserved, allocated, free), a hardware summary, the executors offered here (or why not), allocation counts and the streams open here (specs/streams.md).',
  request: z.object({}),
  response: z.object({
    state: NodeStateSchema,
    stateSince: z.number(),
    labels: LabelsSchema,
    onboarded: z.boolean(),
    resources: z.object({
      onboarded: ResourceVectorSchema.nullable(),
      reserved: ResourceVectorSchema,
      allocated: ResourceVectorSchema,
      free: ResourceVectorSchema,
      deficit: ResourceVectorSchema.nullable(),
      reservations: z.number().int(),
      allocations: z.number().int()
    }),
    hardware: z.object({
      cpuModel: z.string(),
      cpuCores: z.number().int(),
      cpuThreads: z.number().int(),
      architecture: z.string(),
      ramBytes: z.number().int(),
      diskBytes: z.number().int(),
      gpus: z.array(z.object({ index: z.number().int(), vendor: z.string(), model: z.string(), vramBytes: z.number().int() }))
    }),
    /** Every executor dms knows: whether it works here (what it enforces, or why it does not). */
    executors: z.array(z.object({ name: z.string(), available: z.boolean(), detail: z.string().optional(), reason: z.string().optional() })),
    allocations: z.object({ total: z.number().int(), running: z.number().int() }),
    /** Stream ends open on this node: a follow that ended leaves 0 behind (issue 8). */
    streams: z.object({ open: z.number().int(), readers: z.number().int(), writers: z.number().int() })
  }),
  needs: ['nodeState', 'resources', 'hardware', 'executors', 'provider', 'streams'],
  handler: async ({ nodeState, resources, hardware, executors, provider, streams }) => {
    const node = nodeState.get()
    const ledger = resources.snapshot()
    const spec = await hardware.spec()
    const allocations = provider.list()
    const open = streams.count()
    return {
      streams: { open: open.readers + open.writers, ...open },
      executors: executors.status(),
      allocations: { total: allocations.length, running: allocations.filter(a => a.status === 'running').length },
      state: node.state,
      stateSince: node.since,
      labels: node.labels,
      onboarded: ledger.onboarded !== null,
      resources: {
        onboarded: ledger.onboarded,
        reserved: ledger.reserved,
        allocated: ledger.allocated,
        free: ledger.free,
        deficit: ledger.deficit,
        reservations: ledger.reservations.length,
        allocations: ledger.allocations.length
      },
      hardware: {
        cpuModel: spec.cpu.model,
        cpuCores: spec.cpu.cores,
        cpuThreads: spec.cpu.threads,
        architecture: spec.cpu.architecture,
        ramBytes: spec.ramBytes,
        diskBytes: spec.disk.totalBytes,
        gpus: spec.gpus.map(({ index, vendor, model, vramBytes }) => ({ index, vendor, model, vramBytes }))
      }
    }
  }
})
