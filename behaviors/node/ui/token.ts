import { z } from 'zod'
import { UI_TOKEN_TTL_MS } from '../../../src/api/ui-auth.js'
import { defineBehavior } from '../../define.js'

export default defineBehavior({
  path: '/dms/node/ui/token',
  describe: `A one-time login token for the dashboard (what \`dms ui\` asks for): open \`http://127.0.0.1:<api port>/?token=<token>\` within ${UI_TOKEN_TTL_MS / 60_000} minutes and the daemon trades it, once, for a session cookie. Authorized like any behaviour: the node's owner (a root) gets one, and whoever they granted /dms/node/ui.`,
  request: z.strictObject({}),
  response: z.object({ token: z.string(), expiry: z.string() }),
  needs: ['ui'],
  // a person opens a dashboard now and then: a loop asking for tokens only churns the table
  limits: { perSenderPerSec: 1, burst: 5 },
  handler: ({ ui }) => ui.issueToken()
})
