import type { Node } from '../../src/index.js'
import type { DeploymentView } from '../../src/services/orchestrator/index.js'
import type { LedgerSnapshot } from '../../src/services/resources/index.js'

/** Calls of the deployment tests on in-process nodes (each bounded by its own deadline). */
const T = { timeout: 30_000 }

/**
 * Follows a deployment on `node` (long polls on its status, `after` the last transition seen)
 * until `done` says so; bounded by the poll count.
 */
export async function untilDeployment (node: Node, id: string, done: (v: DeploymentView) => boolean): Promise<DeploymentView> {
  let v = await node.invoke<DeploymentView>(node.did, '/dms/node/deployment/status', { id }, T)
  for (let i = 0; i < 300 && !done(v); i++) v = await node.invoke<DeploymentView>(node.did, '/dms/node/deployment/status', { id, after: v.transitionCount }, { timeout: 10_000 })
  return v
}

/** The reservations and allocations `node`'s ledger holds for an ensemble. */
export async function heldFor (node: Node, ensembleId: string): Promise<string[]> {
  const l = await node.invoke<LedgerSnapshot>(node.did, '/dms/node/resources/ledger', {}, T)
  return [...l.reservations, ...l.allocations].map(r => r.id).filter(x => x.startsWith(`${ensembleId}.`))
}
