/** Hardware detection (issue 4). Interface to be completed there. */
export interface HardwareService {
  spec: () => Promise<unknown>
}
