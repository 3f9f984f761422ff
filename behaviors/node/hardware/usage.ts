import { z } from 'zod'
import { HardwareUsageSchema } from '../../../src/services/hardware/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/hardware/usage',
  describe: 'Live use of the machine: CPU %, RAM used, and the data dir\'s disk used and free.',
  request: z.object({}),
  response: HardwareUsageSchema,
  needs: ['hardware'],
  handler: async ({ hardware }) => await hardware.usage()
})
