import './lib/polyfill.js'

/**
 * The public API of dms as a library: start a node, declare behaviours, catch typed errors.
 * The daemon (`dms run`) is built from exactly this.
 */
export { createNode, type Node, type NodeOptions } from './node/create-node.js'
export { defineBehavior } from '../behaviors/define.js'
export type { Services } from '../behaviors/services.js'
export type { BehaviorDeclaration, CallInfo } from './actor/behavior.js'
export type { Handle, Envelope } from './actor/types.js'
export type { CallOptions, Destination } from './actor/system.js'
export type { Config } from './node/config.js'
export {
  DmsError, Unauthorized, UnknownBehavior, BadRequest, Expired, Replayed, Overloaded, HandlerFailed,
  FrameTooLarge, Timeout, Unreachable, NotRunning, WrongPassphrase, InsufficientResources,
  InvalidState, NotFound, type WireError
} from './lib/errors.js'
