/**
 * The simulator's virtual clock and seeded randomness. `install()` replaces the process's
 * timers (`setTimeout`, `setInterval`, their clears, `AbortSignal.timeout`), `Date` and
 * `Math.random` with virtual ones, so the real product code (actor system, hello announcer,
 * peer book) runs unchanged on simulated time. `run()` fires timers in (time, creation) order and
 * lets every promise continuation settle (one real `setImmediate`) between instants: a seed
 * reproduces the run exactly. For the simulator only: never imported by the product.
 */

type Callback = (...args: unknown[]) => void

interface Timer {
  id: number
  at: number
  seq: number
  fn: Callback
  args: unknown[]
  /** Interval period, 0 for a one-shot timer. */
  every: number
  cancelled: boolean
}

/** A min-heap of timers ordered by (at, seq). */
class TimerHeap {
  private readonly a: Timer[] = []
  get size (): number { return this.a.length }
  peek (): Timer | undefined { return this.a[0] }
  private less (i: number, j: number): boolean {
    const x = this.a[i]; const y = this.a[j]
    return x.at < y.at || (x.at === y.at && x.seq < y.seq)
  }

  push (t: Timer): void {
    const a = this.a
    a.push(t)
    let i = a.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      if (!this.less(i, p)) break
      ;[a[i], a[p]] = [a[p], a[i]]
      i = p
    }
  }

  pop (): Timer | undefined {
    const a = this.a
    const top = a[0]
    const last = a.pop()
    if (a.length > 0 && last !== undefined) {
      a[0] = last
      let i = 0
      for (;;) {
        const l = 2 * i + 1; const r = l + 1
        let m = i
        if (l < a.length && this.less(l, m)) m = l
        if (r < a.length && this.less(r, m)) m = r
        if (m === i) break
        ;[a[i], a[m]] = [a[m], a[i]]
        i = m
      }
    }
    return top
  }
}

/** mulberry32: a small, fast, seedable PRNG (32-bit state). */
export function seededRandom (seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6D2B79F5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** What the handle returned by the virtual `setTimeout` offers (Node's `Timeout` subset). */
class VirtualTimeout {
  constructor (readonly id: number, private readonly clock: VirtualClock) {}
  unref (): this { return this }
  ref (): this { return this }
  hasRef (): boolean { return true }
  refresh (): this { this.clock.refresh(this.id); return this }
  [Symbol.toPrimitive] (): number { return this.id }
}

const real = {
  setTimeout: globalThis.setTimeout,
  clearTimeout: globalThis.clearTimeout,
  setInterval: globalThis.setInterval,
  clearInterval: globalThis.clearInterval,
  setImmediate: globalThis.setImmediate,
  Date: globalThis.Date,
  random: Math.random,
  abortTimeout: AbortSignal.timeout.bind(AbortSignal)
}

/** Real-time helpers for the simulator's own reporting (wall clock). */
export const realNow = (): number => real.Date.now()

export class VirtualClock {
  /** Virtual unix milliseconds. */
  now: number
  /** Timers fired so far. */
  fired = 0
  private readonly heap = new TimerHeap()
  private readonly byId = new Map<number, Timer>()
  private nextId = 1
  private seq = 0
  private installed = false
  readonly random: () => number

  constructor (seed: number, start = Date.UTC(2026, 0, 1)) {
    this.now = start
    this.random = seededRandom(seed)
  }

  schedule (fn: Callback, ms: number, args: unknown[] = [], every = 0): number {
    const delay = Math.max(0, Number.isFinite(ms) ? Math.floor(ms) : 0)
    const t: Timer = { id: this.nextId++, at: this.now + delay, seq: this.seq++, fn, args, every: every > 0 ? Math.max(1, every) : 0, cancelled: false }
    this.byId.set(t.id, t)
    this.heap.push(t)
    return t.id
  }

  cancel (id: unknown): void {
    // a VirtualTimeout converts to its id
    const n = Number(id)
    const t = this.byId.get(n)
    if (t === undefined) return
    t.cancelled = true
    this.byId.delete(n)
  }

  refresh (id: number): void {
    const t = this.byId.get(id)
    if (t === undefined) return
    t.cancelled = true
    const again: Timer = { ...t, at: this.now + Math.max(0, t.every), seq: this.seq++, cancelled: false }
    this.byId.set(id, again)
    this.heap.push(again)
  }

  /** Timers waiting to fire. */
  get pending (): number { return this.byId.size }

  /** Replaces the process's timers, Date and Math.random with this clock's. */
  install (): void {
    if (this.installed) return
    this.installed = true
    const clock = this
    const g = globalThis as Record<string, unknown>
    g.setTimeout = (fn: Callback, ms?: number, ...args: unknown[]) => new VirtualTimeout(clock.schedule(fn, ms ?? 0, args), clock)
    g.setInterval = (fn: Callback, ms?: number, ...args: unknown[]) => new VirtualTimeout(clock.schedule(fn, ms ?? 0, args, ms ?? 1), clock)
    g.clearTimeout = (h: unknown) => { if (h !== undefined && h !== null) clock.cancel(h) }
    g.clearInterval = g.clearTimeout
    AbortSignal.timeout = (ms: number): AbortSignal => {
      const ac = new AbortController()
      clock.schedule(() => { ac.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError')) }, ms)
      return ac.signal
    }
    Math.random = clock.random
    const RealDate = real.Date
    class VDate extends RealDate {
      constructor (...args: unknown[]) {
        if (args.length === 0) super(clock.now)
        else super(...(args as [number]))
      }

      static override now (): number { return clock.now }
    }
    g.Date = VDate
  }

  /** Puts the real timers, Date and Math.random back. */
  uninstall (): void {
    if (!this.installed) return
    this.installed = false
    const g = globalThis as Record<string, unknown>
    g.setTimeout = real.setTimeout
    g.setInterval = real.setInterval
    g.clearTimeout = real.clearTimeout
    g.clearInterval = real.clearInterval
    g.Date = real.Date
    AbortSignal.timeout = real.abortTimeout
    Math.random = real.random
  }

  /** Lets every pending promise continuation run (they all settle before a real setImmediate). */
  async settle (): Promise<void> {
    await new Promise<void>((resolve) => { real.setImmediate(resolve) })
  }

  /**
   * Fires every timer due up to `until` (virtual ms), in order; the continuations of one instant
   * settle before the next instant's timers fire. `stop()` returning true ends the run early
   * (checked once per instant).
   */
  async runUntil (until: number, stop?: () => boolean): Promise<void> {
    await this.settle()
    for (;;) {
      const top = this.heap.peek()
      if (top === undefined || top.at > until) break
      this.now = Math.max(this.now, top.at)
      // one instant: every timer due now (timers it adds for now run in the next batch)
      const at = top.at
      let batch = 0
      while (batch < 10_000) {
        const t = this.heap.peek()
        if (t === undefined || t.at !== at) break
        this.heap.pop()
        if (t.cancelled) continue
        batch++
        if (t.every > 0) {
          t.at += t.every
          t.seq = this.seq++
          this.heap.push(t)
        } else {
          this.byId.delete(t.id)
        }
        this.fired++
        t.fn(...t.args)
      }
      await this.settle()
      if (stop?.() === true) return
    }
    this.now = Math.max(this.now, until)
  }
}
