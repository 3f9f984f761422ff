import type { Connection, Libp2p, PeerId, Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import { TopicValidatorResult, type GossipSub, type Message, type TopicValidatorFn } from '@libp2p/gossipsub'
import { peerIdFromString } from '@libp2p/peer-id'
import type { FrameOrigin, FrameReceiver, GossipVerdict, Transport } from '../actor/types.js'
import { BadRequest, FrameTooLarge, NotRunning, Unreachable } from '../lib/errors.js'
import type { Logger } from '../lib/log.js'
import {
  ACTOR_PROTOCOL, DEFAULT_SEND_TIMEOUT_MS, MAX_ACTOR_STREAMS_PER_CONNECTION,
  OPEN_RETRY_MAX_MS, OPEN_RETRY_MIN_MS, OPEN_STREAM_TIMEOUT_MS, OVERSIZE_HEAD_BYTES
} from './constants.js'
import { encodeFrame, FrameReader, type FrameEvent } from './frame-codec.js'
import { scoreTopic } from './gossip-score.js'

/**
 * The libp2p actor transport: one long-lived stream per peer on `/dms/actor/1.0.0` carries
 * every envelope both ways (a stream per message costs 8–10× in latency and throughput). Whoever
 * needs the stream first opens it; the other side adopts the inbound stream as its own writer.
 *
 * Simultaneous open (both sides open at once, before either sees the other's stream) is
 * resolved deterministically: both sides keep the stream *initiated by the smaller PeerId* (string
 * order) and half-close the other after flushing what was already queued on it. Every actor stream
 * is read until it ends, so nothing written on the losing stream is lost; the only cost is that
 * frames written around the switch may arrive out of order, which the actor layer does not rely
 * on (invocations are matched by nonce, not by order). Between the same initiator, the newer
 * stream wins (the remote re-opened because it considers the old one dead).
 *
 * Gossip (`publish`/`subscribe`) goes over gossipsub with StrictSign, so an inbound message's
 * `from` is its authenticated publisher and becomes `origin.peer`. Every subscribed topic gets a
 * gossipsub topic validator that asks the receiver's `validateGossip` before the message is
 * delivered *or forwarded*: a rejected message goes no further and counts against the peer that
 * sent it (gossip-score.ts), an ignored one is dropped without penalty.
 */
export interface ActorTransportInit {
  maxFrameBytes: number
}

export interface ActorTransportComponents {
  node: Libp2p<{ pubsub: GossipSub }>
  /** An open connection to the peer: an existing one, or a dial after looking up its addresses. */
  connect: (peer: PeerId, signal: AbortSignal) => Promise<Connection>
  log: Logger
}

export interface ActorTransport extends Transport {
  start: () => Promise<void>
  stop: () => Promise<void>
  /** Open actor streams to a peer (diagnostics and tests: normally 1). */
  actorStreams: (peer: string) => number
  /** When actor bytes last arrived from the peer (unix ms; 0: none while a stream was open): proof of life. */
  lastHeard: (peer: string) => number
  /**
   * Calls `listener` when the last connection to a peer closes, so that the actor layer can fail
   * invocations waiting on that peer at once instead of at their deadline. Returns an unsubscribe.
   */
  onPeerDisconnect: (listener: (peer: string) => void) => () => void
}

export function createActorTransport (init: ActorTransportInit, components: ActorTransportComponents): ActorTransport {
  return new Libp2pActorTransport(init, components)
}

/** A frame waiting for its turn on the peer's stream, or for the drain that confirms it. */
interface Pending {
  bytes: Uint8Array
  /** Unix ms: if the frame is not written (or its drain confirmed) by then, the caller gets Unreachable. */
  deadline: number
  /** Settles the caller's promise (a promise settles once: later calls are no-ops). */
  done: (err?: Error) => void
}

interface Channel {
  readonly peer: PeerId
  /** The stream this side writes on. */
  writer?: Stream
  /** Every actor stream to the peer still being read (the writer and any retiring one). */
  readonly streams: Set<Stream>
  /** An outbound open in progress. */
  opening?: Promise<void>
  /** Frames in send order, written as the stream accepts them (FIFO, one writer at a time). */
  queue: Pending[]
  /**
   * Frames already handed to the writer that made it report backpressure: confirmed at its drain
   * (or failed if the stream dies first). While set, nothing more is written (at most one batch
   * sits in the stream's buffer).
   */
  inDrain?: Pending[]
  /** Streams opened since a frame was last written: a peer that kills each new stream is given up on. */
  opensWithoutWrite: number
  /**
   * Opens that failed in a row since a frame was last written, and the time before which no new
   * open starts (0: none pending). Frames sent meanwhile wait for `retryTimer` (or their deadline).
   */
  failedOpens: number
  retryAt: number
  retryTimer?: ReturnType<typeof setTimeout>
  /** A frame went out this tick: frames sent meanwhile wait for the end of the tick and go out in one write. */
  pumpScheduled: boolean
  /** Unix ms of the last bytes read from any of the peer's actor streams. */
  heardAt: number
  /**
   * The channel's one deadline timer, armed only while frames wait (queued or in drain) and
   * due at `timerAt`: frames on an open stream that takes them never cost a timer.
   */
  timer?: ReturnType<typeof setTimeout>
  timerAt: number
}

/**
 * How long one stream's frames are delivered for in one event-loop turn before the other streams
 * get theirs (checked every 8 frames). A peer that sends thousands of requests at once then holds
 * up a request from a quiet peer by one round of the busy streams, ~2 ms each, not by everything
 * they sent; quick frames still go hundreds to a turn, so their replies leave in large writes.
 */
const TURN_BUDGET_MS = 2

/** A FIFO of frame events (an array with a read index: shift() in O(1)). */
class FrameQueue {
  private items: FrameEvent[] = []
  private head = 0
  get length (): number { return this.items.length - this.head }
  push (evs: FrameEvent[]): void { for (const ev of evs) this.items.push(ev) }
  shift (): FrameEvent | undefined {
    if (this.head >= this.items.length) return undefined
    const ev = this.items[this.head]
    this.head++
    if (this.head === this.items.length) { this.items = []; this.head = 0 } else if (this.head > 1024 && this.head * 2 > this.items.length) { this.items = this.items.slice(this.head); this.head = 0 }
    return ev
  }
}

/**
 * Frames queued after the first of a tick are written as one buffer, up to this size: one muxer frame, one
 * Noise encryption and one socket write instead of one each per frame. The receiver's frame
 * reader splits them as it would split a TCP segment. Nothing waits for a batch to fill.
 */
const MAX_BATCH_BYTES = 64 * 1024

/** Opens in a row that yield no usable stream before queued frames are reported unreachable. */
const MAX_OPENS_WITHOUT_WRITE = 3

/**
 * The deadline timer fires no more often than this: when frames with many different deadlines
 * wait, each firing sweeps the queue once, so the sweeps stay few whatever the frame rate. A
 * frame fails at most this much after its deadline.
 */
const DEADLINE_SWEEP_MIN_MS = 10

/** Takes the first queued frames, at least one, up to MAX_BATCH_BYTES together. */
function takeBatch (queue: Pending[]): Pending[] {
  let n = 1
  let size = queue[0].bytes.length
  while (n < queue.length && size + queue[n].bytes.length <= MAX_BATCH_BYTES) size += queue[n++].bytes.length
  return queue.splice(0, n)
}

function concat (items: Pending[]): Uint8Array {
  let size = 0
  for (const i of items) size += i.bytes.length
  const out = new Uint8Array(size)
  let at = 0
  for (const i of items) { out.set(i.bytes, at); at += i.bytes.length }
  return out
}

/**
 * Resolves at the stream's next 'drain', rejects if it closes first. Not `stream.onDrain()`: in
 * @libp2p/utils 7.4 that keeps its first promise once resolved, so every later wait on the same
 * stream resolves at once and backpressure is lost after the first drain (the stream's write
 * buffer, unbounded, then takes whatever is sent: tested in transport.int.test.ts).
 */
async function drained (s: Stream): Promise<void> {
  if (!s.writableNeedsDrain) return
  if (s.status !== 'open' && s.status !== 'closing') throw new Error(`the stream is ${s.status}`)
  await new Promise<void>((resolve, reject) => {
    const onDrain = (): void => { s.removeEventListener('close', onClose); resolve() }
    const onClose = (evt: StreamCloseEvent): void => { s.removeEventListener('drain', onDrain); reject(evt.error ?? new Error('the stream closed')) }
    s.addEventListener('drain', onDrain, { once: true })
    s.addEventListener('close', onClose, { once: true })
  })
}

function usable (s: Stream): boolean {
  return s.status === 'open' && s.writeStatus === 'writable'
}

function errorText (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

class Libp2pActorTransport implements ActorTransport {
  readonly peerId: string
  readonly maxFrameBytes: number
  private receiver?: FrameReceiver
  private readonly channels = new Map<string, Channel>()
  private readonly topics = new Set<string>()
  private readonly disconnectListeners = new Set<(peer: string) => void>()
  private running = false
  /** Aborts opens in progress when the transport stops. */
  private stopping = new AbortController()
  private readonly node: Libp2p<{ pubsub: GossipSub }>
  private readonly log: Logger

  constructor (init: ActorTransportInit, private readonly components: ActorTransportComponents) {
    this.node = components.node
    this.log = components.log
    this.peerId = components.node.peerId.toString()
    this.maxFrameBytes = init.maxFrameBytes
  }

  setReceiver (receiver: FrameReceiver): void {
    this.receiver = receiver
  }

  async start (): Promise<void> {
    if (this.running) return
    this.stopping = new AbortController()
    // Running before the handler exists: a stream that arrives as soon as it is registered is kept.
    this.running = true
    try {
      await this.node.handle(ACTOR_PROTOCOL, (stream, connection) => {
        this.attach(connection.remotePeer, stream)
      }, { maxInboundStreams: MAX_ACTOR_STREAMS_PER_CONNECTION, maxOutboundStreams: MAX_ACTOR_STREAMS_PER_CONNECTION })
    } catch (err) {
      this.running = false
      throw err
    }
    this.node.services.pubsub.addEventListener('message', this.onGossip)
    this.node.addEventListener('peer:disconnect', this.onDisconnect)
    for (const t of this.topics) this.join(t)
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    this.stopping.abort(new NotRunning('the network is stopping'))
    this.node.services.pubsub.removeEventListener('message', this.onGossip)
    this.node.removeEventListener('peer:disconnect', this.onDisconnect)
    for (const t of this.topics) this.node.services.pubsub.topicValidators.delete(t)
    await this.node.unhandle(ACTOR_PROTOCOL).catch(() => {})
    const channels = [...this.channels.values()]
    this.channels.clear()
    for (const c of channels) {
      if (c.timer !== undefined) clearTimeout(c.timer)
      c.timer = undefined
      if (c.retryTimer !== undefined) clearTimeout(c.retryTimer)
      c.retryTimer = undefined
      this.failAll(c, new NotRunning('the network stopped before the frame was sent'))
      for (const item of c.inDrain ?? []) item.done(new NotRunning('the network stopped before the frame was confirmed'))
    }
    const streams = channels.flatMap(c => [...c.streams])
    // The connections close right after (libp2p stop); an abort discards nothing still wanted.
    for (const s of streams) s.abort(new NotRunning('the network is stopping'))
  }

  lastHeard (peer: string): number {
    return this.channels.get(peer)?.heardAt ?? 0
  }

  actorStreams (peer: string): number {
    return [...(this.channels.get(peer)?.streams ?? [])].filter(s => s.status === 'open').length
  }

  onPeerDisconnect (listener: (peer: string) => void): () => void {
    this.disconnectListeners.add(listener)
    return () => { this.disconnectListeners.delete(listener) }
  }

  private readonly onDisconnect = (evt: CustomEvent<PeerId>): void => {
    const peer = evt.detail.toString()
    for (const l of [...this.disconnectListeners]) {
      try { l(peer) } catch (err) { this.log.error({ err, peer }, 'peer-disconnect listener threw') }
    }
  }

  // ---- direct frames ----

  /**
   * Queues the frame on the peer's channel and resolves once the muxer took it. Frames are written
   * in order, one at a time, while the stream accepts data; when `send()` returns false the pump
   * waits for the drain, so at most one frame sits in the stream's write buffer and a caller
   * awaiting each send is paced by the network. Nothing queued is dropped silently: a frame that
   * cannot be written (no stream can be opened, the stream dies before its drain, the deadline
   * passes) rejects with `Unreachable`.
   */
  async send (peer: string, frame: Uint8Array, deadline?: number): Promise<void> {
    if (frame.length > this.maxFrameBytes) {
      throw new FrameTooLarge(`frame of ${frame.length} bytes exceeds the limit of ${this.maxFrameBytes}`, { limit: this.maxFrameBytes, size: frame.length })
    }
    if (!this.running) throw new NotRunning('the network is not running')
    if (peer === this.peerId) throw new BadRequest('frames for this node are delivered locally, not over the network', { peer })
    const now = Date.now()
    if (deadline !== undefined && deadline <= now) throw new Unreachable(`peer ${peer} is unreachable: the deadline passed before the frame was sent`, { peer })
    let ch = this.channels.get(peer)
    if (ch === undefined) {
      let remote: PeerId
      try { remote = peerIdFromString(peer) } catch { throw new BadRequest(`not a peer id: '${peer.slice(0, 80)}'`, { peer: peer.slice(0, 80) }) }
      ch = this.channel(remote)
    }
    const at = deadline ?? now + DEFAULT_SEND_TIMEOUT_MS
    const channel = ch
    // No timer or abort listener per frame (each costs at 10k frames/s): the channel's one
    // deadline timer watches the frames that have to wait.
    await new Promise<void>((resolve, reject) => {
      channel.queue.push({ bytes: encodeFrame(frame), deadline: at, done: (err) => { if (err === undefined) resolve(); else reject(err) } })
      if (channel.timer !== undefined && at < channel.timerAt) this.armTimer(channel, at)
      this.writeSoon(channel)
    })
  }

  private channel (peer: PeerId): Channel {
    const key = peer.toString()
    let ch = this.channels.get(key)
    if (ch === undefined) {
      ch = { peer, streams: new Set(), queue: [], opensWithoutWrite: 0, failedOpens: 0, retryAt: 0, pumpScheduled: false, timerAt: Infinity, heardAt: 0 }
      this.channels.set(key, ch)
    }
    return ch
  }

  /**
   * Writes queued frames while the writer accepts them, opens a stream when there is none, then
   * arms or clears the channel's deadline timer for whatever still waits.
   */
  private pump (ch: Channel): void {
    this.write(ch)
    this.watchDeadlines(ch)
  }

  private write (ch: Channel): void {
    if (!this.running || ch.queue.length === 0 || ch.inDrain !== undefined) return
    const w = ch.writer
    if (w === undefined || !usable(w)) {
      if (ch.opening !== undefined) return
      // After a failed open the next one waits: an open can fail without any I/O (a connection
      // libp2p still lists as open though its muxer closed, right after a reset), and callers
      // that retry at once would otherwise fail and retry within microtasks, never letting the
      // event loop turn (not even to mark that connection closed).
      if (Date.now() < ch.retryAt) { this.armRetry(ch); return }
      if (ch.opensWithoutWrite >= MAX_OPENS_WITHOUT_WRITE) {
        ch.opensWithoutWrite = 0
        const peer = ch.peer.toString()
        this.failAll(ch, new Unreachable(`peer ${peer} is unreachable: its actor stream keeps closing`, { peer }))
        this.pauseOpens(ch)
        return
      }
      ch.opensWithoutWrite++
      ch.opening = this.open(ch)
        .catch((err: unknown) => {
          const peer = ch.peer.toString()
          this.failAll(ch, this.running
            ? new Unreachable(`peer ${peer} is unreachable: ${errorText(err)}`, { peer })
            : new NotRunning('the network stopped before the frame was sent'))
          // Not a stream that died young: a later send may dial afresh, after a pause.
          ch.opensWithoutWrite = 0
          this.pauseOpens(ch)
        })
        .finally(() => {
          ch.opening = undefined
          this.pump(ch)
          this.forgetIfIdle(ch)
        })
      return
    }
    while (ch.queue.length > 0) {
      const items = takeBatch(ch.queue)
      let accepted: boolean
      try {
        accepted = w.send(items.length === 1 ? items[0].bytes : concat(items))
      } catch (err) {
        // The stream refused the write (it is closing): these frames are lost with it; the
        // rest go out on a new stream, as after any stream's close.
        for (const item of items) item.done(new Unreachable(`peer ${ch.peer.toString()} is unreachable: ${errorText(err)}`, { peer: ch.peer.toString() }))
        if (!usable(w)) { if (ch.writer === w) ch.writer = undefined; this.write(ch) }
        return
      }
      ch.opensWithoutWrite = 0
      ch.failedOpens = 0
      ch.retryAt = 0
      if (accepted) { for (const item of items) item.done(); continue }
      // The muxer is full and these frames wait in the stream's buffer: confirm them on drain (or
      // report them lost if the stream dies first), and write nothing more until then.
      ch.inDrain = items
      drained(w).then(() => { for (const item of items) item.done() }, (err: unknown) => {
        for (const item of items) item.done(new Unreachable(`peer ${ch.peer.toString()} is unreachable: the stream closed (${errorText(err)})`, { peer: ch.peer.toString() }))
      }).finally(() => {
        if (ch.inDrain === items) ch.inDrain = undefined
        this.pump(ch)
        this.forgetIfIdle(ch)
      })
      return
    }
  }

  /** No open for a while after one failed: 100 ms, doubling with each failure in a row, at most 2 s. */
  private pauseOpens (ch: Channel): void {
    ch.failedOpens++
    ch.retryAt = Date.now() + Math.min(OPEN_RETRY_MAX_MS, OPEN_RETRY_MIN_MS * 2 ** (ch.failedOpens - 1))
    this.armRetry(ch)
  }

  /** At the end of the pause: open for whatever waits, or forget the channel if nothing does. */
  private armRetry (ch: Channel): void {
    if (ch.retryTimer !== undefined || !this.running) return
    ch.retryTimer = setTimeout(() => {
      ch.retryTimer = undefined
      this.pump(ch)
      this.forgetIfIdle(ch)
    }, Math.max(0, ch.retryAt - Date.now()))
    ch.retryTimer.unref()
  }

  /** Fails every frame of the channel that has not been written yet. */
  private failAll (ch: Channel, err: Error): void {
    const items = ch.queue
    ch.queue = []
    for (const item of items) item.done(err)
  }

  /** Arms the deadline timer while frames wait; clears it once none does. */
  private watchDeadlines (ch: Channel): void {
    const waiting = ch.queue.length > 0 || ch.inDrain !== undefined
    if (!waiting || !this.running) {
      if (ch.timer !== undefined) { clearTimeout(ch.timer); ch.timer = undefined; ch.timerAt = Infinity }
      return
    }
    // An armed timer re-arms itself for the next deadline when it fires.
    if (ch.timer !== undefined) return
    let next = Infinity
    for (const item of ch.queue) if (item.deadline < next) next = item.deadline
    for (const item of ch.inDrain ?? []) if (item.deadline < next) next = item.deadline
    this.armTimer(ch, next)
  }

  private armTimer (ch: Channel, at: number): void {
    if (ch.timer !== undefined) clearTimeout(ch.timer)
    ch.timerAt = at
    ch.timer = setTimeout(() => { this.expire(ch) }, Math.max(0, at - Date.now()))
    // a frame's deadline must never keep a stopping process alive
    ch.timer.unref()
  }

  /**
   * The deadline timer fired: every waiting frame whose deadline passed fails with Unreachable
   * (queued ones are taken out, so they are never written; one already in the stream's buffer may
   * still arrive late, which the receiver treats as any late envelope). Then re-arms for the next.
   */
  private expire (ch: Channel): void {
    ch.timer = undefined
    ch.timerAt = Infinity
    const now = Date.now()
    const peer = ch.peer.toString()
    const late = (): Unreachable => new Unreachable(`peer ${peer} is unreachable: the deadline passed before the frame was written`, { peer })
    let next = Infinity
    if (ch.queue.some(i => i.deadline <= now)) {
      const keep: Pending[] = []
      for (const item of ch.queue) {
        if (item.deadline <= now) item.done(late())
        else { keep.push(item); if (item.deadline < next) next = item.deadline }
      }
      ch.queue = keep
    } else {
      for (const item of ch.queue) if (item.deadline < next) next = item.deadline
    }
    if (ch.inDrain !== undefined) {
      for (const item of ch.inDrain) {
        if (item.deadline <= now) item.done(late())
        else if (item.deadline < next) next = item.deadline
      }
    }
    if (next !== Infinity && this.running) this.armTimer(ch, Math.max(next, now + DEADLINE_SWEEP_MIN_MS))
    this.forgetIfIdle(ch)
  }

  /**
   * The first frame of a tick is written at once: a reply computed as its request arrived leaves
   * before the muxer's own bookkeeping (yamux answers every data frame with a window update) is
   * encrypted and written. Frames queued after it in the same tick wait for the end of the tick
   * and go out together as one write.
   */
  private writeSoon (ch: Channel): void {
    if (ch.pumpScheduled) return
    // marked first: a send made from inside this write (an event it fires) waits for the end of the tick
    ch.pumpScheduled = true
    queueMicrotask(() => {
      ch.pumpScheduled = false
      this.pump(ch)
    })
    this.pump(ch)
  }

  /** Drops the state of a peer with no stream and nothing to send (bounds memory by live peers). */
  private forgetIfIdle (ch: Channel): void {
    const key = ch.peer.toString()
    // (a channel in its pause after a failed open is kept: forgetting it would forget the pause)
    const idle = ch.streams.size === 0 && ch.opening === undefined && ch.queue.length === 0 && ch.inDrain === undefined && ch.retryTimer === undefined
    if (idle && this.channels.get(key) === ch) {
      if (ch.timer !== undefined) { clearTimeout(ch.timer); ch.timer = undefined; ch.timerAt = Infinity }
      this.channels.delete(key)
    }
  }

  /** Opens an outbound actor stream; the channel's writer is then decided by `attach`. */
  private async open (ch: Channel): Promise<void> {
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(OPEN_STREAM_TIMEOUT_MS)])
    const connection = await this.components.connect(ch.peer, signal)
    const stream = await connection.newStream(ACTOR_PROTOCOL, { signal, maxOutboundStreams: MAX_ACTOR_STREAMS_PER_CONNECTION })
    if (!this.running) {
      stream.abort(new NotRunning('the network stopped'))
      throw new NotRunning('the network stopped')
    }
    if (this.attach(ch.peer, stream) === undefined) throw new Error('the actor stream closed as it opened')
  }

  /**
   * Reads a new actor stream (either direction) until it ends and decides which stream this
   * side writes on (see the simultaneous-open rule above). Returns the writer.
   */
  private attach (remote: PeerId, stream: Stream): Stream | undefined {
    if (!this.running) { stream.abort(new NotRunning('the network is not running')); return undefined }
    const peer = remote.toString()
    const channel = this.channel(remote)
    channel.streams.add(stream)
    const origin: FrameOrigin = { peer, via: 'direct' }
    const reader = new FrameReader(this.maxFrameBytes, OVERSIZE_HEAD_BYTES)
    // Frames read but not yet delivered: they are delivered for at most TURN_BUDGET_MS per
    // event-loop turn, so a peer that sends thousands at once cannot make every other peer wait behind
    // them (fair share per stream). While some wait, the stream is paused: yamux then stops
    // granting the sender window, and the backlog is bounded by the window.
    const backlog = new FrameQueue()
    let scheduled = false
    const deliverSome = (): void => {
      scheduled = false
      const until = performance.now() + TURN_BUDGET_MS
      for (let n = 1; ; n++) {
        const ev = backlog.shift()
        if (ev === undefined) break
        this.deliver(ev, origin, stream)
        if (n % 8 === 0 && performance.now() >= until) break
      }
      if (backlog.length > 0) {
        scheduled = true
        if (stream.status === 'open' && stream.readStatus === 'readable') stream.pause()
        setImmediate(deliverSome)
      } else {
        resumeReading()
      }
    }
    /** Lets the stream emit what it buffered while paused (a message event, handled at once). */
    const resumeReading = (): void => {
      if (stream.readStatus !== 'paused') return
      try {
        stream.resume()
      } catch (err) {
        this.log.debug({ err, peer }, 'could not resume an actor stream')
      }
    }

    const onMessage = (evt: StreamMessageEvent): void => {
      channel.heardAt = Date.now()
      const data = evt.data
      const pieces: Iterable<Uint8Array> = data instanceof Uint8Array ? [data] : data
      for (const piece of pieces) {
        backlog.push(reader.push(piece))
        if (reader.failed) break
      }
      // Frames already waiting go first; otherwise deliver in this turn (the quick path).
      if (!scheduled) deliverSome()
    }
    const onRemoteCloseWrite = (): void => {
      // The remote will write no more here (it retired this stream or is shutting down):
      // stop writing on it too, which completes the close.
      if (channel.writer === stream) channel.writer = undefined
      stream.close().catch((err: unknown) => { stream.abort(err instanceof Error ? err : new Error(String(err))) })
      this.pump(channel)
    }
    const onClose = (): void => {
      // Bytes that arrived while the stream was paused are still delivered: resuming emits them
      // (into the backlog) before the listener goes.
      resumeReading()
      stream.removeEventListener('message', onMessage)
      stream.removeEventListener('remoteCloseWrite', onRemoteCloseWrite)
      channel.streams.delete(stream)
      if (channel.writer === stream) channel.writer = undefined
      // Frames still queued go out on a new stream (or are reported unreachable).
      this.pump(channel)
      this.forgetIfIdle(channel)
    }
    stream.addEventListener('message', onMessage)
    stream.addEventListener('remoteCloseWrite', onRemoteCloseWrite)
    stream.addEventListener('close', onClose, { once: true })

    const current = channel.writer
    if (current === undefined || !usable(current)) {
      channel.writer = stream
    } else if (current !== stream) {
      const winner = this.preferred(peer, current, stream)
      const loser = winner === current ? stream : current
      channel.writer = winner
      this.log.debug({ peer, kept: winner.id, retired: loser.id }, 'simultaneous actor streams: retiring one')
      // close() flushes what is already queued, then half-closes; we keep reading it until the
      // remote closes its side too.
      loser.close().catch((err: unknown) => { loser.abort(err instanceof Error ? err : new Error(String(err))) })
    }
    this.pump(channel)
    return channel.writer
  }

  /** Of two open actor streams to `peer`, the one both sides keep (see the class comment). */
  private preferred (peer: string, a: Stream, b: Stream): Stream {
    const aOurs = a.direction === 'outbound'
    const bOurs = b.direction === 'outbound'
    if (aOurs === bOurs) return a.timeline.open >= b.timeline.open ? a : b
    const keepOurs = this.peerId < peer
    return aOurs === keepOurs ? a : b
  }

  private deliver (ev: FrameEvent, origin: FrameOrigin, stream: Stream): void {
    const receiver = this.receiver
    if (ev.type === 'error') {
      this.log.warn({ peer: origin.peer, reason: ev.reason }, 'malformed actor stream: closing it')
      stream.abort(new Error(`malformed actor stream: ${ev.reason}`))
      return
    }
    if (receiver === undefined) {
      this.log.warn({ peer: origin.peer }, 'actor frame arrived before a receiver was set: dropped')
      return
    }
    // A receiver's failure must not break the stream other callers share.
    try {
      if (ev.type === 'frame') receiver.onFrame(ev.frame, origin)
      else receiver.onOversize(ev.head, ev.totalLength, origin)
    } catch (err) {
      this.log.error({ err, peer: origin.peer }, 'frame receiver threw')
    }
  }

  // ---- gossip ----

  async publish (topic: string, frame: Uint8Array): Promise<void> {
    if (frame.length > this.maxFrameBytes) {
      throw new FrameTooLarge(`frame of ${frame.length} bytes exceeds the limit of ${this.maxFrameBytes}`, { limit: this.maxFrameBytes, size: frame.length })
    }
    if (!this.running) throw new NotRunning('the network is not running')
    try {
      await this.node.services.pubsub.publish(topic, frame)
    } catch (err) {
      throw new Unreachable(`publishing on ${topic} failed: ${errorText(err)}`, { topic })
    }
  }

  subscribe (topic: string): void {
    this.topics.add(topic)
    if (this.running) this.join(topic)
  }

  unsubscribe (topic: string): void {
    this.topics.delete(topic)
    if (!this.running) return
    this.node.services.pubsub.unsubscribe(topic)
    this.node.services.pubsub.topicValidators.delete(topic)
  }

  /** Validator and score parameters first, then the subscription: no message of the topic goes unjudged. */
  private join (topic: string): void {
    const pubsub = this.node.services.pubsub
    pubsub.topicValidators.set(topic, this.validateGossip)
    if (!scoreTopic(pubsub, topic)) this.log.debug({ topic }, 'this gossipsub takes no topic score parameters: rejected messages lower no score')
    pubsub.subscribe(topic)
  }

  /**
   * gossipsub's topic validator: runs once per message (duplicates are dropped before it),
   * before the message is delivered here or forwarded to anyone.
   */
  private readonly validateGossip: TopicValidatorFn = (_propagationSource, msg) => {
    // StrictSign: gossipsub refuses unsigned messages before any validator; this is a backstop,
    // since an unsigned message cannot name its publisher.
    if (msg.type !== 'signed') return TopicValidatorResult.Reject
    const receiver = this.receiver
    const origin: FrameOrigin = { peer: msg.from.toString(), via: 'gossip', topic: msg.topic }
    if (receiver === undefined) {
      this.log.warn({ topic: msg.topic }, 'gossip arrived before a receiver was set: ignored')
      return TopicValidatorResult.Ignore
    }
    if (msg.data.length > this.maxFrameBytes) {
      // Larger than this node accepts, though within gossipsub's RPC limit: the receiver hears of
      // it (and counts it); not the publisher's fault if its limit is larger, so no penalty.
      try { receiver.onOversize(msg.data.subarray(0, OVERSIZE_HEAD_BYTES), msg.data.length, origin) } catch (err) { this.log.error({ err, topic: msg.topic }, 'frame receiver threw') }
      return TopicValidatorResult.Ignore
    }
    const validate = receiver.validateGossip
    if (validate === undefined) return TopicValidatorResult.Accept
    let verdict: GossipVerdict
    try {
      verdict = validate(msg.data, origin)
    } catch (err) {
      // A bug of ours is no fault of the publisher's: drop without penalty, and say so.
      this.log.error({ err, topic: msg.topic, from: origin.peer }, 'gossip validator threw')
      return TopicValidatorResult.Ignore
    }
    return VERDICTS[verdict] ?? TopicValidatorResult.Ignore
  }

  /** Messages the topic validator accepted (gossipsub emits no other). */
  private readonly onGossip = (evt: CustomEvent<Message>): void => {
    const msg = evt.detail
    if (msg.type !== 'signed' || !this.topics.has(msg.topic)) return
    const origin: FrameOrigin = { peer: msg.from.toString(), via: 'gossip', topic: msg.topic }
    const receiver = this.receiver
    if (receiver === undefined) return
    try {
      receiver.onFrame(msg.data, origin)
    } catch (err) {
      this.log.error({ err, topic: msg.topic }, 'frame receiver threw')
    }
  }
}

/** The receiver's verdicts on gossipsub's scale (actor/types.ts: GossipVerdict). */
const VERDICTS: Record<GossipVerdict, TopicValidatorResult> = {
  accept: TopicValidatorResult.Accept,
  reject: TopicValidatorResult.Reject,
  ignore: TopicValidatorResult.Ignore
}
