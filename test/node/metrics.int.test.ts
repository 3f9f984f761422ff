import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createNode, type Node } from '../../src/index.js'
import { samples } from '../helpers/prometheus.js'

/**
 * Two nodes in one process (a library user, the tests): each counts its own traffic in its own
 * registry. prom-client's default global registry would have mixed them, or refused the second
 * node's metrics of the same names.
 */
describe('node metrics: one registry per node', () => {
  let dir: string
  let a: Node, b: Node
  const config = { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, helloIntervalMs: 60_000 }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dms-metrics-'))
    a = await createNode({ dataDir: join(dir, 'a'), passphrase: 'pw', config })
    b = await createNode({ dataDir: join(dir, 'b'), passphrase: 'pw', config: { ...config, bootstrap: [a.addrs()[0]] } })
  })
  afterAll(async () => {
    await b?.stop()
    await a?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('what b asks of a is counted as received by a only, and as invoked by b only', async () => {
    expect(a.observe.metrics.registry).not.toBe(b.observe.metrics.registry)
    const key = 'dms_envelopes_received_total{behavior="/public/status",outcome="ok"}'
    const invoked = 'dms_invoke_duration_seconds_count{behavior="/public/status",outcome="ok"}'
    const before = { a: samples((await a.observe.metrics.scrape()).body), b: samples((await b.observe.metrics.scrape()).body) }
    const calls = 3
    for (let i = 0; i < calls; i++) await b.invoke(a.peerId, '/public/status', {}, { timeout: 10_000 })
    const after = { a: samples((await a.observe.metrics.scrape()).body), b: samples((await b.observe.metrics.scrape()).body) }
    expect((after.a.get(key) ?? 0) - (before.a.get(key) ?? 0)).toBe(calls)
    expect(after.b.get(key) ?? 0).toBe(before.b.get(key) ?? 0)
    expect((after.b.get(invoked) ?? 0) - (before.b.get(invoked) ?? 0)).toBe(calls)
    expect(after.a.get(invoked) ?? 0).toBe(before.a.get(invoked) ?? 0)
  })
})
