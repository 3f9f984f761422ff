import { z } from 'zod'

/** An actor's handle on the wire: `{id, did, addr: {peer, inbox}}` (specs/protocol.md, "Handles"). */
export const HandleSchema = z.object({
  id: z.string(),
  did: z.string(),
  addr: z.object({ peer: z.string(), inbox: z.string() })
})
