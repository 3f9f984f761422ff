/**
 * What the actor pipeline reports as it works, for metrics. Optional everywhere: a system built
 * without one pays a single undefined check per hook. Implementations must be cheap and must not
 * throw (they run inside the dispatch of every envelope).
 */
export interface ActorObserver {
  /** An envelope addressed to a behaviour here got its outcome: `ok`, or the error's name. */
  handled: (behavior: string | undefined, outcome: string, actorKind: string) => void
  /** An envelope left one of this node's actors (`reply`: an answer to someone's invoke). */
  sent: (behavior: string, mode: 'invoke' | 'send' | 'publish' | 'reply' | 'relay') => void
  /** One of this node's invokes (or one relayed for the CLI) ended after `seconds`. */
  invoked: (behavior: string, outcome: string, seconds: number) => void
  /**
   * How a capability question was answered: needed none (`public`), the actor itself or its
   * controller (`self`), a chain verified before (`cached`), verified now (`cold`), or `refused`
   * with the refusal's reason.
   */
  capability: (result: 'public' | 'self' | 'cached' | 'cold' | 'refused', reason?: string) => void
  /** A mailbox refused an envelope: `full` (Overloaded) or `closed` (the actor stops). */
  mailboxRefused: (actorKind: string, reason: 'full' | 'closed') => void
}
