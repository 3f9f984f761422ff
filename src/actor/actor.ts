import type { Did } from '../identity/did.js'
import type { Identity } from '../identity/identity.js'
import { DuplicateBehaviorError, buildRegistry, type Registered } from './registry.js'
import { Mailbox, type MailboxLimits } from './mailbox.js'
import type { AnyBehavior } from './behavior.js'
import type { Authorizer, ProofSource } from '../security/authorizer.js'
import type { Handle } from './types.js'

/** Where to send: a full handle, or a DID / PeerId naming a node's root actor (or a local child's DID). */
export type Destination = Handle | string

export interface CallOptions {
  /** Milliseconds from now until the call's deadline. `invoke` requires this or `deadline`. */
  timeout?: number
  /** Absolute deadline, unix ms. */
  deadline?: number
  /** Capability tokens to attach; by default the actor's proof source is asked. */
  cap?: string[]
}

/** What an actor asks of the system it lives in (the outbound half and its own bookkeeping). */
export interface ActorHost {
  readonly peerId: string
  readonly signsAll: boolean
  invokeAs: <T>(actor: Actor, dest: Destination, behavior: string, payload: unknown, opts: CallOptions) => Promise<T>
  sendAs: (actor: Actor, dest: Destination, behavior: string, payload: unknown, opts: CallOptions) => Promise<void>
  publishAs: (actor: Actor, topic: string, behavior: string, payload: unknown, opts: CallOptions) => Promise<void>
  subscribeTopic: (topic: string) => void
  /** The actor stopped: fail its calls, unsubscribe what only it listened to, forget its inbox. */
  retire: (actor: Actor) => void
  onJobError: (err: unknown) => void
}

export interface ActorParts {
  identity: Identity
  inbox: string
  /** The context that controls this actor (its handle's `did`). */
  controller: Did
  /** What kind of actor this is (`node`, `allocation`, `resources`, …): for listings. */
  kind: string
  behaviors: readonly AnyBehavior[]
  services: object
  authorizer: Authorizer
  proofs: ProofSource | undefined
  mailbox: MailboxLimits
}

/**
 * One actor: a key, an inbox on its node, the behaviours it answers, and its own mailbox. The
 * node is the root actor; children (allocations, the resource manager, …) have keys, inboxes and
 * mailbox limits of their own, and can be stopped without stopping the node.
 */
export class Actor {
  readonly handle: Handle
  readonly kind: string
  readonly identity: Identity
  readonly inbox: string
  readonly registry: Map<string, Registered>
  readonly authorizer: Authorizer
  readonly proofs: ProofSource | undefined
  readonly mailbox: Mailbox
  /**
   * Signs this actor's envelopes; undefined for the node itself, whose envelopes the transport
   * authenticates (unless the system signs all envelopes).
   */
  readonly signer: ((data: Uint8Array) => Uint8Array) | undefined
  private state: 'running' | 'stopping' | 'stopped' = 'running'

  constructor (private readonly host: ActorHost, parts: ActorParts) {
    this.identity = parts.identity
    this.inbox = parts.inbox
    this.kind = parts.kind
    this.authorizer = parts.authorizer
    this.proofs = parts.proofs
    this.handle = { id: parts.identity.did, did: parts.controller, addr: { peer: host.peerId, inbox: parts.inbox } }
    this.registry = buildRegistry(parts.behaviors, parts.services)
    this.mailbox = new Mailbox(parts.mailbox, host.onJobError)
    this.signer = parts.identity.peerId === host.peerId && !host.signsAll ? undefined : parts.identity.sign
  }

  get running (): boolean { return this.state === 'running' }

  /** Request–reply with a mandatory deadline; rejects with the remote's typed error. */
  invoke<T = unknown>(dest: Destination, behavior: string, payload: unknown, opts: CallOptions): Promise<T> {
    // the system's own promise, not a wrapper: one turn less between the reply and the caller
    return this.host.invokeAs<T>(this, dest, behavior, payload, opts)
  }

  /** One-way message; resolves once handed to the transport. */
  async send (dest: Destination, behavior: string, payload: unknown, opts: CallOptions = {}): Promise<void> {
    await this.host.sendAs(this, dest, behavior, payload, opts)
  }

  /** Broadcast on a gossipsub topic; receivers need a capability on the topic unless the behaviour is public. */
  async publish (topic: string, behavior: string, payload: unknown, opts: CallOptions = {}): Promise<void> {
    await this.host.publishAs(this, topic, behavior, payload, opts)
  }

  /** Adds a behaviour at run time; a broadcast behaviour subscribes to its topic. */
  register (decl: AnyBehavior, services: object): void {
    const [entry] = buildRegistry([decl], services)
    if (this.registry.has(decl.path)) throw new DuplicateBehaviorError(`behaviour ${decl.path} is declared twice`)
    this.registry.set(decl.path, entry[1])
    if (decl.topic !== undefined) this.host.subscribeTopic(decl.topic)
  }

  /** Topics this actor's broadcast behaviours listen on. */
  topics (): string[] {
    const out: string[] = []
    for (const [, r] of this.registry) if (r.decl.topic !== undefined) out.push(r.decl.topic)
    return out
  }

  /**
   * Stops the actor: its inbox refuses new messages at once, waiting ones are handled (`drain`)
   * or answered `NotRunning` (`refuse`), its own pending calls fail, and topics only it listened on
   * are unsubscribed. Resolves when no handler of it runs any more. Idempotent.
   */
  async stop (mode: 'drain' | 'refuse' = 'refuse'): Promise<void> {
    if (this.state !== 'running') {
      await this.mailbox.close(mode)
      return
    }
    this.state = 'stopping'
    this.host.retire(this)
    await this.mailbox.close(mode)
    this.state = 'stopped'
  }
}
