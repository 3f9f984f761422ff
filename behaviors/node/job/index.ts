import cancel from './cancel.js'
import list from './list.js'
import logs from './logs.js'
import newJob from './new.js'
import result from './result.js'
import status from './status.js'

/** Jobs split across nodes, coordinated by the user's own node (specs/jobs.md). */
export const jobBehaviors = [newJob, list, status, logs, result, cancel] as const
