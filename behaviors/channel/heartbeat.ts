import { defineBehavior } from '../define.js'
import { HeartbeatRequest, HeartbeatResponse } from '../../src/channel/wire.js'

export default defineBehavior({
  path: '/dms/channel/heartbeat',
  // No capability: a heartbeat only says "I am here" and learns the same; the caller is the
  // Noise-authenticated peer, rate-limited per peer like any envelope. Requiring a grant would make
  // the receiver's heartbeats to a sender need the sender's trust in its receiver.
  capability: false,
  describe: 'Liveness of the channels between two nodes (one heartbeat covers every channel of the pair; sent only while one is open). Answers an empty object.',
  request: HeartbeatRequest,
  response: HeartbeatResponse,
  needs: ['channels'],
  handler: ({ channels }, _req, call) => { channels.heartbeat(call); return {} }
})
