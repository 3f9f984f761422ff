import { z } from 'zod'
import { HandleSchema } from '../../../src/services/provider/index.js'
import { defineBehavior } from '../../define.js'

const Port = z.object({ private: z.number(), public: z.number(), protocol: z.enum(['tcp', 'udp']) })

export default defineBehavior({
  path: '/dms/node/deployment/manifest',
  describe: 'Which allocation of a deployment runs where: per ensemble node its provider, per allocation its provider, id, actor handle, ports and status.',
  request: z.strictObject({ id: z.string() }),
  response: z.object({
    ensembleId: z.string(),
    status: z.string(),
    orchestrator: HandleSchema.optional(),
    nodes: z.record(z.string(), z.object({ peer: z.string(), did: z.string(), allocations: z.array(z.string()) })),
    allocations: z.record(z.string(), z.object({ node: z.string(), peer: z.string().optional(), id: z.string().optional(), handle: HandleSchema.optional(), status: z.string(), ports: z.array(Port) }))
  }),
  needs: ['deployments'],
  readOnly: true,
  handler: ({ deployments }, { id }) => deployments.manifest(id)
})
