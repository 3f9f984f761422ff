/** An actor's handle on the wire: `{id, did, addr: {peer, inbox}}` (specs/protocol.md, "Handles"). */
export { HandleSchema } from '../src/services/provider/schemas.js'
