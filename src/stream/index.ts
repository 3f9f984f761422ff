import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { z } from 'zod'
import type { Actor, CallOptions, Destination } from '../actor/actor.js'
import type { CallInfo } from '../actor/behavior.js'
import { decodeEnvelope } from '../actor/envelope.js'
import type { RelayReply } from '../actor/outbound.js'
import type { Handle } from '../actor/types.js'
import type { ChannelService } from '../channel/index.js'
import { BadRequest, Conflict, InvalidArgument, NotFound, NotRunning, Overloaded, StreamLost, errorFromWire, type DmsError } from '../lib/errors.js'
import { silentLogger } from '../lib/log.js'
import {
  STREAM_CALL_TIMEOUT_MS, STREAM_MAX_OPEN, STREAM_MAX_WINDOW_BYTES, STREAM_MIN_WINDOW_BYTES, STREAM_STALL_MS, STREAM_WINDOW_BYTES
} from './constants.js'
import { StreamReader, StreamWriter } from './stream.js'
import { StreamOpen, type CancelRequest, type CreditRequest, type DataRequest, type EndRequest } from './wire.js'

export { StreamReader, StreamWriter, chunkSize } from './stream.js'
export { StreamOpen } from './wire.js'

/** Node-wide settings of streams (`NodeOptions.streams`). */
export interface StreamServiceInit {
  /** Default credit window of the streams this node reads, in bytes. */
  window?: number
  /** A writer with no credit for this long ends the stream (StreamLost, reason `stalled`). */
  stallMs?: number
  callTimeoutMs?: number
  maxOpen?: number
}

export interface StreamServiceComponents {
  /** The node's root actor: it sends the frames of every stream (node to node). */
  root: () => Actor
  /** This node's PeerId: a stream to itself needs no heartbeat. */
  peerId: string
  /** Liveness of the other node: the channels' links (one heartbeat covers channels and streams of a pair). */
  channels: ChannelService
  resolve: (dest: Destination) => Handle
  /** Relays an envelope signed elsewhere (the local API). */
  relay: (frame: Uint8Array, mode: 'invoke') => Promise<RelayReply | undefined>
  log?: Logger
}

export interface OpenOptions {
  /** The opening actor (default: the node); the accepting behaviour authorizes it. */
  from?: Actor
  window?: number
  /** Deadline of the open call. */
  timeoutMs?: number
  cap?: string[]
}

/** One row of `/dms/node/streams/list`. */
export interface StreamInfo {
  role: 'reader' | 'writer'
  id: string
  /** The other end's node. */
  peer: string
  window: number
  chunks: number
  /** Reader: bytes received and not consumed; writer: bytes sent and credit (cumulative). */
  buffered?: number
  sent?: number
  credit?: number
  /** Writer: waiting for credit. */
  blocked?: boolean
  openedAt: number
}

export interface StreamService {
  /**
   * Opens a stream: invokes `behavior` on `dest` with `request` plus `open: {id, window}`; the
   * behaviour accepts it (`accept`) and writes. Resolves once it answered, with the reading end.
   */
  open: (dest: Destination, behavior: string, request: Record<string, unknown>, opts?: OpenOptions) => Promise<StreamReader>
  /**
   * The local API's variant: `frame` is an envelope the CLI signed, whose request carries `open`;
   * this node reads the stream for it (the API hands the chunks on over HTTP).
   */
  relay: (frame: Uint8Array) => Promise<StreamReader>
  /** The writing end of the stream a behaviour was opened with (call it when nothing can fail any more). */
  accept: (call: CallInfo, open: StreamOpen) => StreamWriter
  list: () => StreamInfo[]
  /** Open streams (both ends) on this node. */
  count: () => { readers: number, writers: number }
  // ---- the behaviours' side ----
  data: (call: CallInfo, req: z.infer<typeof DataRequest>) => { credit: number }
  credit: (call: CallInfo, req: z.infer<typeof CreditRequest>) => void
  end: (call: CallInfo, req: z.infer<typeof EndRequest>) => void
  cancel: (call: CallInfo, req: z.infer<typeof CancelRequest>) => void
  stop: () => Promise<void>
}

export function createStreamService (init: StreamServiceInit, c: StreamServiceComponents): StreamService {
  const log = c.log ?? silentLogger()
  const defaultWindow = init.window ?? STREAM_WINDOW_BYTES
  const stallMs = init.stallMs ?? STREAM_STALL_MS
  const callTimeoutMs = init.callTimeoutMs ?? STREAM_CALL_TIMEOUT_MS
  const maxOpen = init.maxOpen ?? STREAM_MAX_OPEN
  /** Reading ends by `<writer's node> <id>`, writing ends by `<reader's node> <id>`: the id is the reader's, unique per pair. */
  const readers = new Map<string, StreamReader>()
  const writers = new Map<string, StreamWriter>()
  const releases = new Map<StreamReader | StreamWriter, () => void>()
  let stopped = false

  const lostError = (side: 'reader' | 'writer', peer: string, id: string): DmsError =>
    new StreamLost(`the ${side} of stream ${id} (node ${peer}) stopped answering heartbeats`, { side, reason: 'unreachable', peer, id })

  /** Heartbeats to the other node while the stream is open (none for a stream within this node). */
  const hold = (end: StreamReader | StreamWriter, side: 'reader' | 'writer'): void => {
    if (end.peer === c.peerId) return
    releases.set(end, c.channels.hold(end.peer, () => { end.onLost(lostError(side, end.peer, end.id)) }))
  }
  const release = (end: StreamReader | StreamWriter): void => {
    releases.get(end)?.()
    releases.delete(end)
  }
  const room = (): void => {
    if (stopped) throw new NotRunning('the node is stopping')
    if (readers.size + writers.size >= maxOpen) throw new Overloaded(`this node has ${maxOpen} streams open`, { retryAfterMs: 1_000 })
  }

  const newReader = (peer: string, id: string, window: number): StreamReader => {
    room()
    const key = `${peer} ${id}`
    if (readers.has(key)) throw new Conflict(`a stream ${id} from ${peer} is already open here`)
    const r: StreamReader = new StreamReader({
      id,
      peer,
      window,
      root: c.root,
      callTimeoutMs,
      log,
      onDone: () => { if (readers.get(key) === r) readers.delete(key); release(r) }
    })
    readers.set(key, r)
    return r
  }
  /** The open was refused or failed: forget the reader quietly (the writer, if any, learns NotFound). */
  const drop = (r: StreamReader): void => { r.onLost(new NotRunning('the stream was not opened')) }

  const checkWindow = (w: number): number => {
    if (!Number.isInteger(w) || w < STREAM_MIN_WINDOW_BYTES || w > STREAM_MAX_WINDOW_BYTES) throw new InvalidArgument(`a stream window is ${STREAM_MIN_WINDOW_BYTES}–${STREAM_MAX_WINDOW_BYTES} bytes, got ${w}`)
    return w
  }

  return {
    async open (dest, behavior, request, opts = {}) {
      const to = c.resolve(dest)
      const window = checkWindow(opts.window ?? defaultWindow)
      const id = randomBytes(16).toString('base64url')
      const r = newReader(to.addr.peer, id, window)
      const from = opts.from ?? c.root()
      const call: CallOptions = { timeout: opts.timeoutMs ?? callTimeoutMs, ...(opts.cap !== undefined ? { cap: opts.cap } : {}) }
      try {
        await from.invoke(to, behavior, { ...request, open: { id, window } }, call)
      } catch (err) {
        drop(r)
        throw err
      }
      if (r.state === 'open') hold(r, 'writer')
      return r
    },
    async relay (frame) {
      const env = decodeEnvelope(frame).envelope
      const parsed = StreamOpen.safeParse((env.msg as { open?: unknown } | undefined)?.open)
      if (!parsed.success) throw new BadRequest('an envelope that opens a stream carries open: {id, window} in its request')
      const r = newReader(env.to.addr.peer, parsed.data.id, parsed.data.window)
      let reply: RelayReply | undefined
      try {
        reply = await c.relay(frame, 'invoke')
      } catch (err) {
        drop(r)
        throw err
      }
      if (reply !== undefined && 'error' in reply.reply) {
        drop(r)
        throw errorFromWire(reply.reply.error)
      }
      if (r.state === 'open') hold(r, 'writer')
      return r
    },
    accept (call, open) {
      room()
      const peer = call.from.addr.peer
      const key = `${peer} ${open.id}`
      if (writers.has(key)) throw new Conflict(`a stream ${open.id} to ${peer} is already open here`)
      const w: StreamWriter = new StreamWriter({
        id: open.id,
        peer,
        window: open.window,
        stallMs,
        root: c.root,
        callTimeoutMs,
        log,
        onDone: () => { if (writers.get(key) === w) writers.delete(key); release(w) }
      })
      writers.set(key, w)
      hold(w, 'reader')
      return w
    },
    list () {
      const out: StreamInfo[] = []
      for (const r of readers.values()) out.push({ role: 'reader', id: r.id, peer: r.peer, window: r.window, chunks: r.chunks, buffered: r.buffered, openedAt: r.openedAt })
      for (const w of writers.values()) out.push({ role: 'writer', id: w.id, peer: w.peer, window: w.window, chunks: w.chunks, sent: w.sent, credit: w.credit, blocked: w.blocked, openedAt: w.openedAt })
      return out
    },
    count: () => ({ readers: readers.size, writers: writers.size }),
    data (call, req) {
      const r = readers.get(`${call.from.addr.peer} ${req.id}`)
      if (r === undefined) throw new NotFound(`no stream ${req.id} from ${call.from.addr.peer} is open here`, { id: req.id })
      return { credit: r.onData(req.seq, req.chunk) }
    },
    credit (call, req) {
      const w = writers.get(`${call.from.addr.peer} ${req.id}`)
      if (w === undefined) throw new NotFound(`no stream ${req.id} to ${call.from.addr.peer} is open here`, { id: req.id })
      w.onCredit(req.credit)
    },
    end (call, req) {
      readers.get(`${call.from.addr.peer} ${req.id}`)?.onEnd(req.seq, req.info)
    },
    cancel (call, req) {
      // idempotent: a cancel of a stream already over is answered all the same
      const key = `${call.from.addr.peer} ${req.id}`
      if (req.to === 'writer') writers.get(key)?.onCancel(req.reason)
      else readers.get(key)?.onCancel(req.reason, req.error)
    },
    async stop () {
      stopped = true
      // tell the other ends (best effort: the calls fail once the actors stop, and then their heartbeats tell them)
      for (const w of [...writers.values()]) w.cancel('the node is stopping', new StreamLost('the writer\'s node is stopping', { side: 'writer', reason: 'stopping', peer: c.peerId, id: w.id }))
      for (const r of [...readers.values()]) r.cancel('the node is stopping')
    }
  }
}
