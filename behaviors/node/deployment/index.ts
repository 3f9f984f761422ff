import list from './list.js'
import logs from './logs.js'
import logsStream from './logs-stream.js'
import manifest from './manifest.js'
import newDeployment from './new.js'
import shutdown from './shutdown.js'
import status from './status.js'

/** The orchestrator side of deployments, on the user's own node. */
export const deploymentBehaviors = [newDeployment, list, status, manifest, logs, logsStream, shutdown] as const
