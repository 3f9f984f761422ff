import type { Logger } from 'pino'
import type { z } from 'zod'
import type { Actor, Destination } from '../actor/actor.js'
import type { CallInfo } from '../actor/behavior.js'
import type { Handle } from '../actor/types.js'
import { InvalidArgument, NotFound, NotRunning, Timeout, type DmsError } from '../lib/errors.js'
import { silentLogger } from '../lib/log.js'
import { jsonSublevel, type JsonSublevel } from '../services/store.js'
import type { Db } from '../store/db.js'
import {
  CHANNEL_ACK_WAIT_MS, CHANNEL_CALL_TIMEOUT_MS, CHANNEL_COMMIT_GROUP, CHANNEL_HEARTBEAT_MISSES, CHANNEL_HEARTBEAT_MS, CHANNEL_MAX_QUEUED_SENDS,
  CHANNEL_OUTBOX_LIMIT, CHANNEL_RTO_MAX_MS, CHANNEL_RTO_MS, CHANNEL_WINDOW
} from './constants.js'
import { Link, type LinkState } from './links.js'
import { ChannelReceiver, type ChannelHandler } from './receiver.js'
import { ChannelSender, type ChannelStatus } from './sender.js'
import { ChannelName, type ChannelAck, type DeliverRequest } from './wire.js'

export type { ChannelBatch, ChannelHandler, ReceiveContext } from './receiver.js'
export type { LinkState } from './links.js'
export type { ChannelStatus } from './sender.js'

/** Node-wide settings of channels (`NodeOptions.channels`). */
export interface ChannelServiceInit {
  heartbeatMs?: number
  heartbeatMisses?: number
  /** Defaults of every channel this node opens. */
  window?: number
  outboxLimit?: number
  maxQueuedSends?: number
  callTimeoutMs?: number
  rtoMs?: number
  rtoMaxMs?: number
  /** How long a receiver holds a deliver's reply for its messages to be handled. */
  ackWaitMs?: number
  /** fsync every outbox write and checkpoint commit (default true: what was acknowledged survives a machine crash). */
  syncWrites?: boolean
}

export interface ChannelServiceComponents {
  db: Db
  /** The node's root actor: the default sender, and who heartbeats peers. */
  root: () => Actor
  resolve: (dest: Destination) => Handle
  log?: Logger
}

export interface ChannelOptions {
  /** The sending actor (default: the node). */
  from?: Actor
  window?: number
  outboxLimit?: number
  maxQueuedSends?: number
  /** The receiver refused a message (`seq`) or the whole channel (`seq` undefined); neither is retried. */
  onRefused?: (err: DmsError, seq: number | undefined) => void
}

/** The sending end, as `open` gives it. */
export interface Channel {
  readonly name: string
  readonly to: Handle
  /** Resolves once `msg` is durably in the outbox, with its sequence number; waits while the outbox is full, `Overloaded` past the queue bound. */
  send: (msg: unknown) => Promise<{ seq: number }>
  /** Resolves once the receiver acknowledged `seq` (handled and committed it, or refused it). */
  whenAcked: (seq: number) => Promise<void>
  readonly status: ChannelStatus
  /** Stops sending here; the outbox stays on disk and the channel resumes when opened again. */
  close: () => void
}

export interface ReceiveOptions {
  /** Each message is parsed with it; a message it refuses is refused (`BadRequest`) and reported to the sender. */
  schema?: z.ZodType
  /**
   * Messages whose effects are committed in one batch at most (default CHANNEL_COMMIT_GROUP). A
   * handler reads the store as it was before its group: one that must read what the previous
   * message wrote sets 1 (one fsync per message).
   */
  group?: number
}

/** One row of `/dms/node/channels/list`. */
export interface ChannelInfo {
  role: 'sender' | 'receiver'
  name: string
  /** The other node. */
  peer: string
  /** The sending and the receiving actor. */
  from: string
  to: string
  state: LinkState
  status: ChannelStatus
  /** Next sequence number the sender will assign (sender rows). */
  nextSeq?: number
  /** Highest sequence number acknowledged (sender rows). */
  acked?: number
  /** Highest sequence number handled (receiver rows). */
  checkpoint?: number
  /** Unacknowledged messages in the outbox (sender rows). */
  outbox?: number
  inFlight?: number
  failed?: number
  duplicates?: number
}

export interface ChannelService {
  /** Opens (or returns the open) channel from `opts.from` (default the node) to `dest` named `name`. */
  open: (dest: Destination, name: string, opts?: ChannelOptions) => Channel
  /**
   * Ends the channel from `opts.from` (default the node) to `dest` named `name` for good: closes
   * it and deletes its outbox (unacknowledged messages included), its record and its refused
   * messages, and it is no longer listed. For a user whose conversation is over (a deployment
   * that ended); opening it again starts from sequence 1.
   */
  discard: (dest: Destination, name: string, opts?: { from?: Actor }) => Promise<void>
  /**
   * The receiving side's counterpart: forgets the channels named `name` from the sending actor
   * `from` (a DID): their checkpoints and refusals are deleted and they are no longer listed.
   * Should that sender send again, its messages are handled again.
   */
  forget: (from: string, name: string) => Promise<void>
  /** Registers the handler of channel `name` on this node: called once per message, in order. */
  receive: (name: string, handler: ChannelHandler, opts?: ReceiveOptions) => void
  /** The JSON sublevel a receiver's handler state lives in (the `store` its context gives). */
  store: (name: string) => JsonSublevel
  list: () => ChannelInfo[]
  /** Connection state per peer of the links (channels' and streams'). */
  peers: () => Array<{ peer: string, state: LinkState }>
  /** Heartbeats this node sent to `peer` so far (none run while no channel or stream links the pair). */
  heartbeats: (peer: string) => number
  /**
   * Keeps heartbeats to `peer` running (the link the channels use: one heartbeat covers every
   * channel and stream of the pair) until the returned release is called; `onLost` runs once if
   * the peer goes `disconnected` meanwhile. For streams (src/stream/), called right after hearing
   * from the peer.
   */
  hold: (peer: string, onLost: () => void) => () => void
  /** Resolves when the link to `peer` is in `state` (at once if it is); rejects with `Timeout` after `timeoutMs`. */
  waitFor: (peer: string, state: LinkState, timeoutMs: number) => Promise<void>
  // ---- the behaviours' side ----
  hello: (call: CallInfo, req: { name: string, last: number, acked: number }) => Promise<ChannelAck>
  deliver: (call: CallInfo, req: DeliverRequest) => Promise<ChannelAck>
  heartbeat: (call: CallInfo) => void
  stop: () => Promise<void>
}

export function createChannelService (init: ChannelServiceInit, c: ChannelServiceComponents): ChannelService {
  const log = c.log ?? silentLogger()
  const heartbeatMs = init.heartbeatMs ?? CHANNEL_HEARTBEAT_MS
  const misses = init.heartbeatMisses ?? CHANNEL_HEARTBEAT_MISSES
  const ackWaitMs = init.ackWaitMs ?? CHANNEL_ACK_WAIT_MS
  const outbox = jsonSublevel(c.db, 'channel-outbox')
  const meta = jsonSublevel(c.db, 'channel-meta')
  const failed = jsonSublevel(c.db, 'channel-failed')
  const checkpoints = jsonSublevel(c.db, 'channel-checkpoints')
  const stores = new Map<string, JsonSublevel>()
  const senders = new Map<string, ChannelSender>()
  const receivers = new Map<string, ChannelReceiver>()
  const handlers = new Map<string, { handler: ChannelHandler, schema?: z.ZodType, group: number }>()
  const sync = init.syncWrites ?? true
  const links = new Map<string, Link>()
  const watchers = new Set<{ peer: string, state: LinkState, done: () => void }>()
  const holders = new Set<{ peer: string, lost: () => void }>()
  let stopped = false

  const link = (peer: string): Link => {
    let l = links.get(peer)
    if (l === undefined) {
      l = new Link({
        peer,
        intervalMs: heartbeatMs,
        misses,
        log,
        ping: async (p, timeout) => { await c.root().invoke(p, '/dms/channel/heartbeat', {}, { timeout }) },
        onState: (p, state) => {
          for (const s of senders.values()) if (s.to.addr.peer === p) s.linkChanged()
          for (const w of watchers) if (w.peer === p && w.state === state) w.done()
          if (state === 'disconnected') for (const h of [...holders]) if (h.peer === p) h.lost()
        }
      })
      links.set(peer, l)
    }
    return l
  }
  const store = (name: string): JsonSublevel => {
    let s = stores.get(name)
    if (s === undefined) { s = jsonSublevel(c.db, `channel-app/${name}`); stores.set(name, s) }
    return s
  }

  const receiverFor = async (call: CallInfo, name: string): Promise<ChannelReceiver> => {
    if (stopped) throw new NotRunning('the node is stopping')
    if (!handlers.has(name)) throw new NotFound(`no receiver for channel ${name} on this node`, { name })
    const to = call.envelope.to
    const key = `${call.from.id} ${to.id} ${name}`
    let r = receivers.get(key)
    if (r === undefined) {
      r = new ChannelReceiver({ key, from: call.from, name, db: c.db, checkpoints, sync, group: handlers.get(name)?.group ?? CHANNEL_COMMIT_GROUP, registration: () => { const h = handlers.get(name); return h === undefined ? undefined : { ...h, store: store(name) } }, log })
      receivers.set(key, r)
    }
    r.lastFrom = call.from
    link(call.from.addr.peer).holdReceiver()
    await r.ready()
    return r
  }

  return {
    open (dest, name, opts = {}) {
      if (stopped) throw new NotRunning('the node is stopping')
      if (!ChannelName.safeParse(name).success) throw new InvalidArgument(`not a channel name: ${name}`)
      const from = opts.from ?? c.root()
      const to = c.resolve(dest)
      const key = `${from.handle.id} ${to.id} ${name}`
      let s = senders.get(key)
      if (s === undefined || s.status !== 'open') {
        const window = opts.window ?? init.window ?? CHANNEL_WINDOW
        const outboxLimit = Math.max(window, opts.outboxLimit ?? init.outboxLimit ?? CHANNEL_OUTBOX_LIMIT)
        const l = link(to.addr.peer)
        s = new ChannelSender({
          key,
          from,
          to,
          name,
          db: c.db,
          outbox,
          meta,
          failed,
          link: l,
          log,
          // a closed or refused channel stays listed (with its status) until it is opened again
          onClosed: () => {},
          opts: {
            window,
            outboxLimit,
            maxQueuedSends: opts.maxQueuedSends ?? init.maxQueuedSends ?? CHANNEL_MAX_QUEUED_SENDS,
            callTimeoutMs: init.callTimeoutMs ?? CHANNEL_CALL_TIMEOUT_MS,
            rtoMs: init.rtoMs ?? CHANNEL_RTO_MS,
            rtoMaxMs: init.rtoMaxMs ?? CHANNEL_RTO_MAX_MS,
            sync,
            onRefused: opts.onRefused
          }
        })
        senders.set(key, s)
        l.holdSender()
      }
      const sender = s
      return {
        name,
        to,
        send: async (msg) => await sender.send(msg),
        whenAcked: async (seq) => { await sender.whenAcked(seq) },
        get status () { return sender.status },
        close: () => { sender.close() }
      }
    },
    async discard (dest, name, opts = {}) {
      const from = opts.from ?? c.root()
      const key = `${from.handle.id} ${c.resolve(dest).id} ${name}`
      const s = senders.get(key)
      if (s !== undefined) {
        s.close()
        senders.delete(key)
        await s.settled()
      }
      await outbox.clear({ gt: `${key}!`, lt: `${key}!~` })
      await failed.clear({ gt: `${key}!`, lt: `${key}!~` })
      await meta.del(key)
    },
    async forget (from, name) {
      for (const [key, r] of [...receivers]) {
        const [f, , n] = key.split(' ')
        if (f !== from || n !== name) continue
        r.stop()
        receivers.delete(key)
        await checkpoints.del(key)
      }
      // a receiver not made since the node started has its checkpoint on disk only (receivers are the root)
      await checkpoints.del(`${from} ${c.root().handle.id} ${name}`)
    },
    receive (name, handler, opts = {}) {
      if (!ChannelName.safeParse(name).success) throw new InvalidArgument(`not a channel name: ${name}`)
      if (handlers.has(name)) throw new InvalidArgument(`channel ${name} already has a receiver`)
      handlers.set(name, { handler, schema: opts.schema, group: Math.max(1, opts.group ?? CHANNEL_COMMIT_GROUP) })
    },
    store,
    list () {
      const out: ChannelInfo[] = []
      for (const s of senders.values()) {
        out.push({ role: 'sender', name: s.name, peer: s.to.addr.peer, from: s.fromId, to: s.to.id, state: links.get(s.to.addr.peer)?.state ?? 'disconnected', status: s.status, nextSeq: s.last + 1, acked: s.acked, outbox: s.outboxSize, inFlight: s.inFlight, failed: s.failedCount })
      }
      for (const [key, r] of receivers) {
        const [from, to, name] = key.split(' ')
        out.push({ role: 'receiver', name, peer: r.lastFrom.addr.peer, from, to, state: links.get(r.lastFrom.addr.peer)?.state ?? 'disconnected', status: 'open', checkpoint: r.checkpoint, duplicates: r.duplicates })
      }
      return out
    },
    peers: () => [...links].filter(([, l]) => l.held || l.state !== 'connecting').map(([peer, l]) => ({ peer, state: l.state })),
    heartbeats: (peer) => links.get(peer)?.pings ?? 0,
    hold (peer, onLost) {
      if (stopped) throw new NotRunning('the node is stopping')
      const l = link(peer)
      let released = false
      const h = {
        peer,
        lost: () => { release(); onLost() }
      }
      const release = (): void => {
        if (released) return
        released = true
        holders.delete(h)
        l.releaseStream()
      }
      holders.add(h)
      l.holdStream()
      return release
    },
    async waitFor (peer, state, timeoutMs) {
      if (links.get(peer)?.state === state) return
      await new Promise<void>((resolve, reject) => {
        const w = { peer, state, done: () => { clearTimeout(t); watchers.delete(w); resolve() } }
        const t = setTimeout(() => { watchers.delete(w); reject(new Timeout(`the link to ${peer} did not become ${state} within ${timeoutMs} ms`)) }, timeoutMs)
        watchers.add(w)
      })
    },
    async hello (call, req) {
      const r = await receiverFor(call, req.name)
      await r.hello(req.acked)
      return r.ack(req.acked)
    },
    async deliver (call, req) {
      const r = await receiverFor(call, req.name)
      const top = r.accept(req.msgs)
      if (top > 0) await r.handledBy(top, Math.min(ackWaitMs, Math.max(0, call.envelope.exp - Date.now() - 1_000)))
      return r.ack(req.acked)
    },
    heartbeat (call) {
      links.get(call.from.addr.peer)?.alive()
    },
    async stop () {
      stopped = true
      for (const s of [...senders.values()]) s.close()
      for (const r of receivers.values()) r.stop()
      for (const l of links.values()) l.close()
      holders.clear()
    }
  }
}
