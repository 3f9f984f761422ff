import { z } from 'zod'
import { Overloaded } from '../lib/errors.js'

/**
 * The node's event stream: what an operator watches happen (peers come and go, hellos, state and
 * onboarding changes, allocations and deployments moving, capabilities granted and revoked).
 * In-process and bounded: the last EVENTS_KEPT events are kept in a ring, each numbered by a
 * sequence that only grows for the life of the process, so a reader that was away asks for what
 * came after the last number it saw and learns, from `first`, whether it missed some.
 *
 * Events carry facts, never secrets: ids, DIDs, statuses, reasons. No token text, key or
 * passphrase is ever put into one (the emitters below pass only such fields).
 */
export const EVENTS_KEPT = 1_000

/** Readers waiting at once for a next event (long polls, SSE followers); beyond, refused. */
export const MAX_EVENT_WAITERS = 256

export const EVENT_TYPES = [
  'node.started', 'node.state', 'peer.connected', 'peer.disconnected', 'hello.heard',
  'onboarding.changed', 'allocation.status', 'deployment.status', 'cap.anchor.added',
  'cap.anchor.removed', 'cap.revoked', 'logger.changed'
] as const
export type EventType = (typeof EVENT_TYPES)[number]

export const NodeEventSchema = z.object({
  seq: z.number().int(),
  /** ISO-8601. */
  at: z.string(),
  type: z.enum(EVENT_TYPES)
}).catchall(z.union([z.string(), z.number(), z.boolean(), z.null(), z.record(z.string(), z.unknown())]))
export type NodeEvent = z.infer<typeof NodeEventSchema>

type Field = string | number | boolean | null | Record<string, unknown>

export interface NodeEvents {
  emit: (type: EventType, fields?: Record<string, Field>) => NodeEvent
  /** Events with `seq > after` still kept (oldest first), at most `limit`. */
  since: (after: number, limit?: number) => NodeEvent[]
  /** Sequence of the newest event (0 before the first), and of the oldest still kept. */
  readonly last: number
  readonly first: number
  /** Resolves with the events after `after` once there is one, or `[]` when `signal` aborts. */
  wait: (after: number, signal: AbortSignal, limit?: number) => Promise<NodeEvent[]>
  /** Calls `listener` for every new event; returns the unsubscribe function. */
  subscribe: (listener: (e: NodeEvent) => void) => () => void
}

export function createNodeEvents (opts: { kept?: number, now?: () => number } = {}): NodeEvents {
  const kept = opts.kept ?? EVENTS_KEPT
  const now = opts.now ?? Date.now
  const ring: NodeEvent[] = []
  const listeners = new Set<(e: NodeEvent) => void>()
  let seq = 0

  const since = (after: number, limit = kept): NodeEvent[] => {
    // seqs are consecutive in the ring: index arithmetic, no scan
    if (ring.length === 0 || after >= seq) return []
    const start = Math.max(0, after - ring[0].seq + 1)
    return ring.slice(start, start + limit)
  }

  return {
    emit: (type, fields = {}) => {
      const e = { ...fields, seq: ++seq, at: new Date(now()).toISOString(), type } as NodeEvent
      ring.push(e)
      if (ring.length > kept) ring.shift()
      for (const l of [...listeners]) {
        // a listener's failure is its own: the others and the emitter carry on
        try { l(e) } catch {}
      }
      return e
    },
    since,
    get last () { return seq },
    get first () { return ring[0]?.seq ?? seq + 1 },
    wait: async (after, signal, limit) => {
      const ready = since(after, limit)
      if (ready.length > 0 || signal.aborted) return ready
      if (listeners.size >= MAX_EVENT_WAITERS) throw new Overloaded(`${MAX_EVENT_WAITERS} readers already wait for events`, { retryAfterMs: 1000 })
      return await new Promise<NodeEvent[]>(resolve => {
        const done = (): void => {
          listeners.delete(onEvent)
          signal.removeEventListener('abort', done)
          resolve(since(after, limit))
        }
        const onEvent = (): void => { done() }
        listeners.add(onEvent)
        signal.addEventListener('abort', done, { once: true })
      })
    },
    subscribe: (listener) => {
      if (listeners.size >= MAX_EVENT_WAITERS) throw new Overloaded(`${MAX_EVENT_WAITERS} readers already follow events`, { retryAfterMs: 1000 })
      listeners.add(listener)
      return () => { listeners.delete(listener) }
    }
  }
}
