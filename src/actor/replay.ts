/**
 * Nonce seen-set bounded by expiry: a nonce is remembered until its envelope expires (after which
 * the envelope is refused as Expired anyway), so memory is bounded by rate × max lifetime.
 * Entries are bucketed by expiry second so purging is O(expired), not a scan.
 */
export class ReplayGuard {
  private readonly seen = new Map<string, number>()
  private readonly buckets = new Map<number, string[]>()
  private lastPurgeSecond = 0

  constructor (private readonly now: () => number) {}

  /** Records the nonce; returns false when it was already seen (a replay). */
  check (nonce: string, exp: number): boolean {
    this.purge()
    if (this.seen.has(nonce)) return false
    this.seen.set(nonce, exp)
    const second = Math.ceil(exp / 1000)
    const bucket = this.buckets.get(second)
    if (bucket === undefined) this.buckets.set(second, [nonce])
    else bucket.push(nonce)
    return true
  }

  get size (): number { return this.seen.size }

  private purge (): void {
    const nowSecond = Math.floor(this.now() / 1000)
    if (nowSecond === this.lastPurgeSecond) return
    this.lastPurgeSecond = nowSecond
    for (const [second, nonces] of this.buckets) {
      if (second > nowSecond) continue
      for (const n of nonces) this.seen.delete(n)
      this.buckets.delete(second)
    }
  }
}
