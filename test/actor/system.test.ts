import { LocalHub } from '../../src/actor/local-transport.js'
import { actorSystemContract } from './system-contract.js'

actorSystemContract('the in-process transport', {
  make: async (ids, opts) => {
    const hub = new LocalHub()
    return { transports: ids.map((id, i) => hub.transport(id.peerId, opts?.maxFrameBytes?.[i])), close: async () => {} }
  }
})
