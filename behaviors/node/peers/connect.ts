import { z } from 'zod'
import { defineBehavior } from '../../define.js'
import { PeerAddressSchema } from './schemas.js'

export default defineBehavior({
  path: '/dms/node/peers/connect',
  describe: 'Dials a peer at a multiaddr ending in /p2p/<peer id> and remembers the address in the peer book once a connection through it exists. Already connected through another address, it dials this one anyway: an address that does not work is Unreachable (or Timeout) and is not recorded.',
  request: z.object({ address: PeerAddressSchema }),
  response: z.object({ id: z.string(), connected: z.boolean() }),
  needs: ['peers'],
  handler: async ({ peers }, { address }, call) => await peers.connect(address, call.signal)
})
