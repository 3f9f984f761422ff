/**
 * Every failure dms reports has one class here, with a literal `name` and a `code`. Tests assert
 * on `name`/`code`, never on message text. On the wire an error travels as
 * `{ error: { name, message, ...fields } }` and is rebuilt by `errorFromWire`.
 */

export type ErrorFields = Record<string, string | number | boolean | null | undefined | string[] | Record<string, unknown>>

export class DmsError extends Error {
  /** Stable, machine-readable code (UPPER_SNAKE); the class name is the `name`. */
  readonly code: string
  readonly fields: ErrorFields

  constructor (message: string, code: string, fields: ErrorFields = {}) {
    super(message)
    this.code = code
    this.fields = fields
  }

  toWire (): WireError {
    return { ...this.fields, name: this.name, code: this.code, message: this.message }
  }
}

export interface WireError {
  name: string
  code?: string
  message: string
  [field: string]: unknown
}

function defineError<N extends string> (name: N, code: string) {
  const C = class extends DmsError {
    override readonly name: N = name
    constructor (message: string, fields: ErrorFields = {}) {
      super(message, code, fields)
    }
  }
  Object.defineProperty(C, 'name', { value: name })
  return C
}

// ---- refusals of an invocation (each answered to the caller within one round trip) ----
export class Unauthorized extends defineError('Unauthorized', 'UNAUTHORIZED') {}
export class UnknownBehavior extends defineError('UnknownBehavior', 'UNKNOWN_BEHAVIOR') {}
export class BadRequest extends defineError('BadRequest', 'BAD_REQUEST') {}
export class Expired extends defineError('Expired', 'EXPIRED') {}
export class Replayed extends defineError('Replayed', 'REPLAYED') {}
export class Overloaded extends defineError('Overloaded', 'OVERLOADED') {}
export class HandlerFailed extends defineError('HandlerFailed', 'HANDLER_FAILED') {}
export class FrameTooLarge extends defineError('FrameTooLarge', 'FRAME_TOO_LARGE') {}

// ---- caller-side failures ----
export class Timeout extends defineError('Timeout', 'TIMEOUT') {}
export class Unreachable extends defineError('Unreachable', 'UNREACHABLE') {}
export class NotRunning extends defineError('NotRunning', 'NOT_RUNNING') {}

// ---- identity, config, storage ----
export class WrongPassphrase extends defineError('WrongPassphrase', 'WRONG_PASSPHRASE') {}
export class NoPassphrase extends defineError('NoPassphrase', 'NO_PASSPHRASE') {}
export class KeyNotFound extends defineError('KeyNotFound', 'KEY_NOT_FOUND') {}
export class KeyExists extends defineError('KeyExists', 'KEY_EXISTS') {}
export class InvalidConfig extends defineError('InvalidConfig', 'INVALID_CONFIG') {}
export class InvalidArgument extends defineError('InvalidArgument', 'INVALID_ARGUMENT') {}
export class NotFound extends defineError('NotFound', 'NOT_FOUND') {}
export class Conflict extends defineError('Conflict', 'CONFLICT') {}

// ---- capabilities ----
export class InvalidToken extends defineError('InvalidToken', 'INVALID_TOKEN') {}
export class Revoked extends defineError('Revoked', 'REVOKED') {}

// ---- resources ----
export class InsufficientResources extends defineError('InsufficientResources', 'INSUFFICIENT_RESOURCES') {}
export class NotOnboarded extends defineError('NotOnboarded', 'NOT_ONBOARDED') {}
export class PortUnavailable extends defineError('PortUnavailable', 'PORT_UNAVAILABLE') {}
export class InvalidState extends defineError('InvalidState', 'INVALID_STATE') {}

// ---- streams (src/stream/, specs/streams.md) ----
/**
 * One side ended a stream on purpose (`side`: who, `reason`: why): a cancel by the reader, or the
 * writer giving up (its source failed). Not retried: open a new stream.
 */
export class StreamClosed extends defineError('StreamClosed', 'STREAM_CLOSED') {}
/**
 * A stream's other side is gone (`side`: which one, `peer`: its node, `reason`: `unreachable` —
 * heartbeats missed — or `stalled` — a reader that granted no credit for too long).
 */
export class StreamLost extends defineError('StreamLost', 'STREAM_LOST') {}

// ---- workloads ----
/** The executor asked for does not work on this node (docker: no engine answers). */
export class ExecutorUnavailable extends defineError('ExecutorUnavailable', 'EXECUTOR_UNAVAILABLE') {}

const KNOWN = {
  Unauthorized, UnknownBehavior, BadRequest, Expired, Replayed, Overloaded, HandlerFailed,
  FrameTooLarge, Timeout, Unreachable, NotRunning, WrongPassphrase, NoPassphrase, KeyNotFound,
  KeyExists, InvalidConfig, InvalidArgument, NotFound, Conflict, InvalidToken, Revoked,
  InsufficientResources, NotOnboarded, PortUnavailable, InvalidState, ExecutorUnavailable,
  StreamClosed, StreamLost
} as const

export type ErrorName = keyof typeof KNOWN

/** Rebuilds a typed error from its wire shape; unknown names become a plain DmsError. */
export function errorFromWire (wire: WireError): DmsError {
  const { name, code, message, ...fields } = wire
  const C = (KNOWN as Record<string, new (m: string, f?: ErrorFields) => DmsError>)[name]
  if (C !== undefined) return new C(String(message), fields as ErrorFields)
  const e = new DmsError(String(message), typeof code === 'string' ? code : 'UNKNOWN', fields as ErrorFields)
  Object.defineProperty(e, 'name', { value: String(name) })
  return e
}

/**
 * Any thrown value as a wire error. A dms error travels as it is; anything else is a bug whose
 * text may carry internals (paths, addresses, another caller's data), so it becomes a generic
 * `HandlerFailed` naming only `errorId`, under which the caller logs the detail.
 */
export function toWireError (err: unknown, errorId?: string): WireError {
  if (err instanceof DmsError) return err.toWire()
  const where = errorId !== undefined ? `; the node logged the details under error id ${errorId}` : ''
  return new HandlerFailed(`internal error${where}`, errorId !== undefined ? { errorId } : {}).toWire()
}

export function isDmsError (err: unknown, name?: ErrorName): err is DmsError {
  return err instanceof DmsError && (name === undefined || err.name === name)
}
