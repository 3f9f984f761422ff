/** Node state and labels (issue 4). Interface to be completed there. */
export interface NodeStateService {
  get: () => Promise<unknown>
}
