import cancel from './cancel.js'
import credit from './credit.js'
import data from './data.js'
import end from './end.js'

/** The stream protocol's messages between two nodes' root actors (specs/streams.md). */
export const streamBehaviors = [data, credit, end, cancel] as const
