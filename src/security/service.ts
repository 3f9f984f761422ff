/**
 * The capability service behaviours use (`needs: ['caps']`): the daemon's trust anchors and
 * revocations. Filled in by the capabilities work (issue 3); the foundation only needs
 * the Authorizer/ProofSource contracts in authorizer.ts.
 */
export interface CapService {
  /** Anchors of the node's context, for `/dms/cap/list`. */
  list: () => Promise<unknown>
}
