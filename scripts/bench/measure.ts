/** Latency and throughput loops shared by the benchmarks. Every loop is bounded in count and time. */
export interface LatencyResult { p50Us: number, p99Us: number, n: number }
export interface ThroughputResult { rps: number, n: number, errors: number }

export function percentile (sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

/** `n` sequential calls; returns their latencies in microseconds. */
export async function sequential (n: number, call: () => Promise<unknown>, maxMs = 60_000): Promise<number[]> {
  const out: number[] = []
  const deadline = performance.now() + maxMs
  for (let i = 0; i < n && performance.now() < deadline; i++) {
    const t = performance.now()
    await call()
    out.push((performance.now() - t) * 1000)
  }
  return out
}

export function summarize (latenciesUs: number[]): LatencyResult {
  const s = [...latenciesUs].sort((a, b) => a - b)
  return { p50Us: Math.round(percentile(s, 50)), p99Us: Math.round(percentile(s, 99)), n: s.length }
}

/** `concurrency` callers in a loop for `durationMs`; counts completed calls. */
export async function throughput (concurrency: number, durationMs: number, call: () => Promise<unknown>): Promise<ThroughputResult> {
  let n = 0
  let errors = 0
  const start = performance.now()
  const end = start + durationMs
  const worker = async (): Promise<void> => {
    for (let i = 0; i < 10_000_000 && performance.now() < end; i++) {
      try { await call(); n++ } catch { errors++ }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  const elapsed = (performance.now() - start) / 1000
  return { rps: Math.round(n / elapsed), n, errors }
}
