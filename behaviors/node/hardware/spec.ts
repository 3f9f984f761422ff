import { z } from 'zod'
import { HardwareSpecSchema } from '../../../src/services/hardware/index.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/hardware/spec',
  describe: 'The machine: CPU (cores, threads, model, vendor, MHz, architecture), RAM, the data dir\'s disk and GPUs.',
  request: z.object({}),
  response: HardwareSpecSchema,
  needs: ['hardware'],
  handler: async ({ hardware }) => await hardware.spec()
})
