/** Resource manager (issue 4): the one persisted ledger. Interface to be completed there. */
export interface ResourceManager {
  snapshot: () => Promise<unknown>
}
