import { z } from 'zod'
import { AnchorsView } from '../../src/security/service.js'
import { defineBehavior } from '../define.js'

export default defineBehavior({
  path: '/dms/cap/list',
  describe: 'Trust anchors of the node\'s capability context: root DIDs, and the require, provide and revoked tokens, each shown as {issuer, subject, capabilities, topics, expiry}.',
  request: z.object({}),
  response: AnchorsView,
  needs: ['caps'],
  handler: async ({ caps }) => await caps.list()
})
