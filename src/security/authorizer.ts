/**
 * The contract between the actor layer and the capability layer. `security/` knows nothing of
 * actors: the dispatcher calls `authorize` with an envelope's facts.
 */
export interface AuthorizeRequest {
  /** The DID that signed the envelope (its `from.id`): a valid chain must end at it. */
  invoker: string
  /** The actor being invoked (`to.id`): tokens restricted to another audience are refused. */
  audience: string
  /** Capability path the behaviour requires. */
  capability: string
  /** For broadcasts: the topic the envelope was published on. */
  topic?: string
  /** The envelope's `cap`: UCAN JWTs, the invoker's own tokens first, then their proofs. */
  proofs: readonly string[]
  /** Unix ms; injected so tests control time. */
  now: number
}

export interface Authorizer {
  /** Resolves when authorized; throws `Unauthorized` (with a `reason` field) otherwise. */
  authorize: (req: AuthorizeRequest) => Promise<void>
}

export interface ProofSource {
  /** Tokens (from provide anchors) proving `capability` [on `topic`] for a call to `audience`. */
  proofsFor: (capability: string, audience: string, topic?: string) => Promise<string[]>
}
