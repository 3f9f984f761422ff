/** Facts about the running node that behaviours may read. */
export interface NodeInfo {
  readonly did: string
  readonly peerId: string
  readonly version: string
  /** Unix ms when the node started. */
  readonly startedAt: number
  /** Listening multiaddrs, each ending in /p2p/<peerId>. */
  addrs: () => string[]
}
