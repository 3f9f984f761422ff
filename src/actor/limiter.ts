/**
 * Token buckets keyed by sender. `take` is O(1); the map is bounded (least recently used senders
 * are dropped first, which only ever resets them to a full bucket).
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number, at: number }>()

  constructor (
    private readonly rate: number,
    private readonly burst: number,
    private readonly maxKeys: number,
    private readonly now: () => number
  ) {}

  take (key: string, rate = this.rate, burst = this.burst): boolean {
    const t = this.now()
    let b = this.buckets.get(key)
    if (b === undefined) {
      b = { tokens: burst, at: t }
      if (this.buckets.size >= this.maxKeys) {
        const oldest = this.buckets.keys().next().value
        if (oldest !== undefined) this.buckets.delete(oldest)
      }
    } else {
      this.buckets.delete(key) // re-insert: Map order doubles as LRU order
      b.tokens = Math.min(burst, b.tokens + ((t - b.at) / 1000) * rate)
      b.at = t
    }
    this.buckets.set(key, b)
    if (b.tokens < 1) return false
    b.tokens -= 1
    return true
  }
}
