import { describe, expect, it } from 'vitest'
import { MAX_LABEL_VALUES, createMetrics } from '../../src/node/metrics.js'

/** Label values are bounded: what peers send cannot grow the registry without end. */
describe('node metrics: label bounding', () => {
  const values = async (m: ReturnType<typeof createMetrics>, name: string): Promise<Array<{ labels: Record<string, string | number>, value: number }>> =>
    (await m.registry.getSingleMetric(name)!.get()).values as Array<{ labels: Record<string, string | number>, value: number }>

  it('a behaviour path the node does not declare is counted as other', async () => {
    const m = createMetrics({ behaviors: ['/public/status'] })
    m.observer.handled('/public/status', 'ok', 'node')
    for (let i = 0; i < 200; i++) m.observer.handled(`/made/up/${i}`, 'ok', 'node')
    const v = await values(m, 'dms_envelopes_received_total')
    expect(v.map(x => [x.labels.behavior, x.value])).toEqual([['/public/status', 1], ['other', 200]])
  })

  it(`an outcome or refusal reason fed by outside input keeps at most ${MAX_LABEL_VALUES} values, the rest counted as other`, async () => {
    const m = createMetrics({ behaviors: ['/public/status'] })
    const n = MAX_LABEL_VALUES + 36
    for (let i = 0; i < n; i++) m.observer.handled('/public/status', `MadeUpError${i}`, 'node')
    // a value seen before the bound was reached keeps its own series
    m.observer.handled('/public/status', 'MadeUpError0', 'node')
    const outcomes = (await values(m, 'dms_envelopes_received_total')).map(x => [x.labels.outcome, x.value] as const)
    expect(outcomes.length).toBe(MAX_LABEL_VALUES + 1)
    expect(new Map(outcomes).get('other')).toBe(n - MAX_LABEL_VALUES)
    expect(new Map(outcomes).get('MadeUpError0')).toBe(2)

    for (let i = 0; i < n; i++) m.observer.capability('refused', `reason-${i}`)
    const reasons = (await values(m, 'dms_capability_checks_total')).map(x => x.labels.reason)
    expect(new Set(reasons).size).toBe(MAX_LABEL_VALUES + 1)
    expect(reasons).toContain('other')
  })
})

/**
 * Issue 10: prom-client's event-loop sampler woke every daemon 100 times a second. The node's own
 * samples only once it is scraped, and reports the delay beyond its sampling period.
 */
describe('node metrics: event loop', () => {
  const gauge = async (m: ReturnType<typeof createMetrics>, name: string): Promise<number> =>
    (await m.registry.getSingleMetric(name)!.get()).values[0]?.value ?? NaN

  it('samples nothing before the first scrape, then sees the loop blocked', async () => {
    const m = createMetrics({ behaviors: [] })
    try {
      // the first scrape starts the sampler: nothing sampled yet, every figure 0
      await m.scrape()
      expect(await gauge(m, 'dms_nodejs_eventloop_lag_max_seconds')).toBe(0)
      expect(await gauge(m, 'dms_nodejs_eventloop_lag_p50_seconds')).toBe(0)
      // Node's histogram records from the sampler's second tick on (the first only marks the
      // time): a timer due after its first tick (100 ms) runs after it, whatever the load
      await new Promise(resolve => setTimeout(resolve, 250))
      // block the loop for 400 ms: the next sample fires at least 300 ms late
      const until = Date.now() + 400
      while (Date.now() < until) { /* busy */ }
      // and lands before a timer due after it
      await new Promise(resolve => setTimeout(resolve, 1))
      await m.scrape()
      expect(await gauge(m, 'dms_nodejs_eventloop_lag_max_seconds')).toBeGreaterThanOrEqual(0.2)
      // the names prom-client registered are there once each: no duplicate registration
      expect(m.registry.getMetricsAsArray().filter(x => x.name.startsWith('dms_nodejs_eventloop_lag')).length).toBe(8)
    } finally {
      m.stop()
    }
  })
})
