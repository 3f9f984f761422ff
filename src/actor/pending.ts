import { randomUUID } from 'node:crypto'
import { Conflict, Timeout, Unreachable } from '../lib/errors.js'
import { REPLY_PREFIX } from './constants.js'
import type { Envelope } from './types.js'

interface Entry {
  /** The peer the reply must come from (the invoked node). */
  expectPeer: string
  /** Who waits: an actor's calls fail when it stops. */
  owner: object
  resolve: (env: Envelope) => void
  reject: (e: Error) => void
  timer: NodeJS.Timeout
}

/**
 * Invocations waiting for their reply, by continuation path (`cont`). A path is unguessable (a
 * random UUID, not the nonce, which a third party may predict) and awaited at most once: a second
 * wait on a path already awaited is refused rather than allowed to take the first caller's reply.
 * An entry leaves exactly once — its reply, its deadline, its peer's disconnect, or its owner's
 * stop — and a timer only ever removes its own entry.
 */
export class PendingReplies {
  private readonly entries = new Map<string, Entry>()

  constructor (private readonly now: () => number) {}

  /** A fresh continuation path. */
  static newCont (): string { return `${REPLY_PREFIX}${randomUUID()}` }

  get size (): number { return this.entries.size }

  /** Waits for the reply to `cont`; throws `Conflict` at once when the path is already awaited. */
  wait (cont: string, expectPeer: string, deadline: number, behavior: string, owner: object): Promise<Envelope> {
    if (this.entries.has(cont)) throw new Conflict(`a reply to ${cont} is already awaited`, { cont })
    return new Promise((resolve, reject) => {
      const entry: Entry = {
        expectPeer,
        owner,
        resolve,
        reject,
        timer: setTimeout(() => {
          if (this.entries.get(cont) === entry) this.entries.delete(cont)
          reject(new Timeout(`no reply to ${behavior} from ${expectPeer} before the deadline`, { behavior, peer: expectPeer }))
        }, Math.max(0, deadline - this.now()))
      }
      this.entries.set(cont, entry)
    })
  }

  /** Whether a call waits for `cont` from `peer` (checked before a reply is verified). */
  awaits (cont: string, peer: string): boolean {
    return this.entries.get(cont)?.expectPeer === peer
  }

  /** Delivers a reply; false when no one awaits `cont` from `peer` (late, or from someone else). */
  deliver (cont: string, peer: string, env: Envelope): boolean {
    const e = this.entries.get(cont)
    if (e === undefined || e.expectPeer !== peer) return false
    this.settle(cont, e)
    e.resolve(env)
    return true
  }

  /** The call's frame could not be sent: its caller learns why at once. */
  fail (cont: string, err: unknown): void {
    const e = this.entries.get(cont)
    if (e === undefined) return
    this.settle(cont, e)
    e.reject(err instanceof Error ? err : new Unreachable(String(err)))
  }

  /** Fails every call matching `which` with the error `why` builds for it. */
  failWhere (which: (e: { expectPeer: string, owner: object }) => boolean, why: (e: { expectPeer: string }) => Error): void {
    for (const [cont, e] of this.entries) {
      if (!which(e)) continue
      this.settle(cont, e)
      e.reject(why(e))
    }
  }

  private settle (cont: string, e: Entry): void {
    clearTimeout(e.timer)
    this.entries.delete(cont)
  }
}
