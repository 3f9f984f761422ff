import anchor from './anchor.js'
import broadcastRevoke from './broadcast-revoke.js'
import list from './list.js'
import revoke from './revoke.js'

// Capability behaviours (security area). Each entry is one file's default export.
// `/broadcast/revoke` lives here rather than under behaviors/broadcast/ because it belongs to
// the capability area (same service, same spec page).
export const capBehaviors = [list, anchor, revoke, broadcastRevoke] as const
