import { z } from 'zod'
import { defineAllocationBehavior } from '../define.js'

export default defineAllocationBehavior({
  path: '/dms/allocation/healthcheck',
  describe: 'This allocation\'s health as its checks last saw it (unknown when it has no check or none ran yet), with its status.',
  request: z.strictObject({}),
  response: z.object({
    status: z.string(),
    health: z.enum(['unknown', 'healthy', 'unhealthy']),
    failures: z.number().int(),
    checkedAt: z.string().optional(),
    detail: z.string().optional()
  }),
  needs: ['allocation'],
  readOnly: true,
  handler: ({ allocation }) => {
    const v = allocation.view()
    return { status: v.status, health: v.health?.status ?? 'unknown', failures: v.health?.failures ?? 0, checkedAt: v.health?.checkedAt, detail: v.health?.detail }
  }
})
