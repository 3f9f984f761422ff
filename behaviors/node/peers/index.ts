// Peer and hello behaviours (network area). Each entry is one file's default export.
export const peerBehaviors = [] as const
