/**
 * The seen-set of envelopes that could be replayed, keyed by **sender and nonce**: a nonce is
 * unique per sender only (a process prefix and a counter, the prefix visible in broadcasts), so a
 * third party sending its own envelopes with a victim's future nonces must not get the victim's
 * real ones refused. An entry lives until its envelope expires (after which the envelope is refused
 * as Expired anyway); entries are bucketed by expiry second so purging is O(expired), not a scan.
 *
 * The set is bounded: past `max` live entries, `check` answers `full` and the caller refuses the
 * envelope with `Overloaded` rather than let a flood of long-lived envelopes grow memory without
 * limit. (The per-peer limiter before it bounds how fast any one peer can fill it.)
 */
export class ReplayGuard {
  private readonly seen = new Map<string, number>()
  private readonly buckets = new Map<number, string[]>()
  private lastPurgeSecond = 0

  constructor (private readonly now: () => number, private readonly max: number) {}

  /** Records the envelope; `replayed` when this sender's nonce was already seen. */
  check (sender: string, nonce: string, exp: number): 'ok' | 'replayed' | 'full' {
    this.purge()
    const key = `${sender} ${nonce}`
    if (this.seen.has(key)) return 'replayed'
    if (this.seen.size >= this.max) return 'full'
    this.seen.set(key, exp)
    const second = Math.ceil(exp / 1000)
    const bucket = this.buckets.get(second)
    if (bucket === undefined) this.buckets.set(second, [key])
    else bucket.push(key)
    return 'ok'
  }

  get size (): number { return this.seen.size }

  private purge (): void {
    const nowSecond = Math.floor(this.now() / 1000)
    if (nowSecond === this.lastPurgeSecond) return
    this.lastPurgeSecond = nowSecond
    for (const [second, keys] of this.buckets) {
      if (second > nowSecond) continue
      for (const k of keys) this.seen.delete(k)
      this.buckets.delete(second)
    }
  }
}
