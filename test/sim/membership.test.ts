import { afterEach, describe, expect, it } from 'vitest'
import { HELLO_EXPIRY_PERIODS, HELLO_JITTER, HELLO_PEERS_PER_INTERVAL } from '../../src/network/constants.js'
import { DEFAULT_SIM_NET } from '../../src/sim/network.js'
import { Simulation } from '../../src/sim/simulation.js'

/**
 * The simulator (src/sim) and the membership it measures (specs/membership.md): small networks
 * on a virtual clock, so every bound below is virtual time or a count, never a wall-clock wait.
 */
const T = 5_000
let sim: Simulation | undefined
afterEach(async () => { await sim?.close(); sim = undefined })

/** Live nodes whose peer book lacks some other live node: [holder, missing] pairs. */
async function gaps (s: Simulation): Promise<Array<[number, number]>> {
  const out: Array<[number, number]> = []
  const live = s.live()
  for (const a of live) for (const b of live) if (a !== b && !await s.knows(a, b)) out.push([a, b])
  return out
}

describe('simulated membership', () => {
  it('a seed reproduces a run exactly, and another seed does not', async () => {
    const run = async (seed: number): Promise<{ hash: string, events: number }> => {
      // cold start: every node announces at start and greets whoever it hears
      const s = await Simulation.create({ nodes: 20, seed, intervalMs: T, net: { loss: 0.05 } }, false)
      sim = s
      await s.run(2 * T)
      const r = { hash: s.net.traceHash(), events: s.net.events }
      await s.close()
      sim = undefined
      return r
    }
    const a = await run(42)
    const b = await run(42)
    const c = await run(43)
    expect(a.events).toBeGreaterThan(1_000)
    expect(b).toEqual(a)
    expect(c.hash).not.toBe(a.hash)
  }, 120_000)

  it('after a partition heals, every live node is known by all within two periods', async () => {
    sim = await Simulation.create({ nodes: 30, seed: 3, intervalMs: T })
    expect(await gaps(sim)).toEqual([])
    sim.net.partition(i => i % 2)
    // long enough for each side to forget the other (dead-node removal)
    await sim.run((HELLO_EXPIRY_PERIODS + 2) * T)
    const split = await gaps(sim)
    expect(split.length).toBeGreaterThan(0)
    expect(split.every(([a, b]) => a % 2 !== b % 2)).toBe(true)
    sim.net.heal()
    // every node announces within a period (± jitter) of the heal
    await sim.run(2 * T)
    expect(await gaps(sim)).toEqual([])
  }, 120_000)

  it(`forgets a dead node within (HELLO_EXPIRY_PERIODS + 1 + HELLO_JITTER) periods, not before ${HELLO_EXPIRY_PERIODS} − HELLO_JITTER`, async () => {
    sim = await Simulation.create({ nodes: 20, seed: 9, intervalMs: T })
    const dead = 0
    const holders = sim.live().filter(i => i !== dead)
    sim.kill(dead)
    const knownBy = async (): Promise<number> => (await Promise.all(holders.map(async h => await sim!.knows(h, dead)))).filter(Boolean).length
    // one or two missed hellos forget nothing (period = T below K peers)
    await sim.run((HELLO_EXPIRY_PERIODS - 1 - HELLO_JITTER) * T)
    expect(await knownBy()).toBe(holders.length)
    await sim.run((2 + 2 * HELLO_JITTER) * T)
    expect(await knownBy()).toBe(0)
    // the live ones are all still known
    expect(await gaps(sim)).toEqual([])
  }, 120_000)

  it('at N = 200 a node receives at most K/(1 − jitter) hellos per interval over each mesh link, and today\'s rule exceeds that', async () => {
    const N = 200
    // the network publishes ~N / period = K periodic hellos per interval; each crosses a mesh
    // link at most once each way, so a node receives each at most (its links) times: on average
    // 2 × meshLinks
    const perInterval = HELLO_PEERS_PER_INTERVAL / (1 - HELLO_JITTER) * 2 * DEFAULT_SIM_NET.meshLinks
    sim = await Simulation.create({ nodes: N, seed: 5, intervalMs: T })
    sim.resetTraffic()
    await sim.run(2 * T)
    const scaled = sim.traffic(2 * T).received * T / 1000
    expect(scaled).toBeGreaterThan(0)
    expect(scaled).toBeLessThan(perInterval)
    await sim.close()
    // the old every-interval rule at the same N, over a tenth of an interval (N² is costly)
    sim = await Simulation.create({ nodes: N, seed: 5, intervalMs: T, peersPerInterval: Infinity })
    sim.resetTraffic()
    await sim.run(T / 10)
    const baseline = sim.traffic(T / 10).received * T / 1000
    expect(baseline).toBeGreaterThan(perInterval)
  }, 180_000)
})
