import type { z } from 'zod'
import type { Envelope, GossipVerdict, Handle } from './types.js'

/** What a handler learns of the call besides its request. */
export interface CallInfo {
  from: Handle
  /** The DID that signed the envelope and was authorized (`from.id`). */
  invoker: string
  envelope: Envelope
  /** Aborts when the caller's deadline passes. */
  signal: AbortSignal
}

export interface BehaviorLimits {
  /** Sustained invocations per second allowed to one sender on this behaviour. */
  perSenderPerSec?: number
  /** Burst above the sustained rate. */
  burst?: number
}

/**
 * One declaration per behaviour path (one file under `behaviors/`). The dispatcher verifies,
 * authorizes, rate-limits and parses the request before the handler runs: a handler only ever
 * sees an authorized, schema-checked request.
 */
export interface BehaviorDeclaration<S, N extends keyof S, Req extends z.ZodType, Res extends z.ZodType> {
  path: string
  /**
   * Capability the invoker must hold. Defaults to the path. `false` means none is needed
   * (every `/public/*` path is treated so); say why beside any override.
   */
  capability?: string | false
  /** Broadcast behaviours: the gossipsub topic they are delivered on (the capability's topic). */
  topic?: string
  describe: string
  request: Req
  response: Res
  needs: readonly N[]
  limits?: BehaviorLimits
  /**
   * The handler only reads (and may wait, as a long poll does): it runs beside the actor's
   * one-at-a-time mailbox instead of in it, so that it never holds up a change (an allocation's
   * `stop` must not wait behind a `logs --follow`). Bounded per actor (MailboxLimits.readers).
   */
  readOnly?: boolean
  /**
   * Broadcast behaviours: a synchronous check of the parsed request, run by the gossip validator
   * before the message is delivered *or forwarded*: `reject` also lowers the publisher's gossip
   * score, `ignore` drops it quietly. Whatever it accepts still passes every check of dispatch.
   */
  gossipCheck?: (services: Pick<S, N>, request: z.output<Req>, from: Handle) => GossipVerdict
  handler: (services: Pick<S, N>, request: z.output<Req>, call: CallInfo) => Promise<z.input<Res>> | z.input<Res>
}

/** A declaration with its types erased, as the registry holds it. */
export interface AnyBehavior {
  path: string
  capability?: string | false
  topic?: string
  describe: string
  request: z.ZodType
  response: z.ZodType
  needs: readonly PropertyKey[]
  limits?: BehaviorLimits
  readOnly?: boolean
  gossipCheck?: (services: never, request: never, from: Handle) => GossipVerdict
  handler: (services: never, request: never, call: CallInfo) => unknown
}

/** The capability a declaration requires: null when none. */
export function requiredCapability (b: Pick<AnyBehavior, 'path' | 'capability'>): string | null {
  if (b.capability === false) return null
  if (b.capability === undefined && (b.path === '/public' || b.path.startsWith('/public/'))) return null
  return b.capability ?? b.path
}
