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
