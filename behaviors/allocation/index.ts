import healthcheck from './healthcheck.js'
import logs from './logs.js'
import logsStream from './logs-stream.js'
import restart from './restart.js'
import start from './start.js'
import status from './status.js'
import stop from './stop.js'

/** What every allocation actor answers (its inbox is `alloc/<id>`). */
export const allocationBehaviors = [start, stop, restart, status, logs, logsStream, healthcheck] as const
