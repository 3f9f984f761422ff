import deliver from './deliver.js'
import heartbeat from './heartbeat.js'
import hello from './hello.js'

/** The reliable channel's messages (specs/channel.md); the deliver reply is the cumulative ack. */
export const channelBehaviors = [hello, deliver, heartbeat] as const
