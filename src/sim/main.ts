/**
 * `npm run sim -- --nodes 10000 [--seed S] [--interval 30s] [--measure 60s] [--baseline] [--table]`
 *
 * Runs a simulated network (specs/membership.md) and prints, per node per second, messages and
 * bytes sent and received (gossip hops and direct frames, duplicates included), the peer-book
 * size, and the virtual time until a node that joins is known by every other; then the run's
 * wall-clock time and memory. `--table` runs N = 100, 1,000 and 10,000 with the rate-scaled hello
 * and today's every-interval hello (the baseline; at 10,000 projected: see below), and prints the
 * growth per decade of N.
 */
import { parseArgs } from 'node:util'
import { realNow } from './clock.js'
import { Simulation, type SimOptions } from './simulation.js'

interface Row {
  mode: 'scaled' | 'baseline'
  nodes: number
  sent: number
  received: number
  bytesSent: number
  bytesReceived: number
  peerBook: number
  joinKnownByAllMs: number | undefined
  wallS: number
  rssMB: number
  projected?: boolean
}

function ms (s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s)
  if (m === null) throw new Error(`not a duration: ${s}`)
  const v = Number(m[1])
  return m[2] === 'ms' ? v : m[2] === 'm' ? v * 60_000 : v * 1000
}

/** Books above this many entries per node do not fit 10,000 nodes in memory: capped (node.ts). */
const BOOK_CAP_ABOVE = 2_000
const BOOK_CAP = 32

async function runOne (opts: Partial<SimOptions> & { nodes: number }, measureMs: number, mode: Row['mode']): Promise<Row> {
  const t0 = realNow()
  const peerBookMax = opts.nodes > BOOK_CAP_ABOVE ? BOOK_CAP : 10_000
  const sim = await Simulation.create({ ...opts, peerBookMax, peersPerInterval: mode === 'baseline' ? Infinity : opts.peersPerInterval })
  try {
    // a warm network: each node's first periodic hello falls at a random point of its first
    // period, so measuring from the start sees the steady rate
    sim.resetTraffic()
    await sim.run(measureMs)
    const t = sim.traffic(measureMs)
    const j = await sim.join()
    const joinMs = await sim.untilKnownByAll(j, 10 * (opts.intervalMs ?? 30_000))
    const book = await sim.peerBookSizes()
    const row: Row = { mode, nodes: opts.nodes, ...t, peerBook: book.mean, joinKnownByAllMs: joinMs, wallS: (realNow() - t0) / 1000, rssMB: process.memoryUsage().rss / 1e6 }
    process.stderr.write(`  ${mode} N=${opts.nodes}: ${sim.net.events} deliveries, ${sim.clock.fired} timers, trace ${sim.net.traceHash().slice(0, 16)}, ${row.wallS.toFixed(1)} s\n`)
    return row
  } finally {
    await sim.close()
  }
}

/**
 * Today's hello at N nodes: every node hears every other's hello each interval, each over
 * every mesh link, so per node traffic is (N − 1) × (copies per message) per interval; the
 * copies per message and bytes per copy are read from the measured baseline at the largest N.
 */
function project (from: Row, nodes: number): Row {
  const f = (nodes - 1) / (from.nodes - 1)
  return { ...from, nodes, sent: from.sent * f, received: from.received * f, bytesSent: from.bytesSent * f, bytesReceived: from.bytesReceived * f, peerBook: Math.min(nodes, 10_000), wallS: 0, rssMB: 0, projected: true }
}

function fmt (n: number, digits = 1): string { return n >= 100 ? Math.round(n).toLocaleString('en') : n.toFixed(digits) }

function print (rows: Row[]): void {
  const head = ['mode', 'N', 'msgs sent/s', 'msgs recv/s', 'bytes sent/s', 'bytes recv/s', 'peer book', 'join known by all', 'wall s', 'RSS MB']
  const lines = rows.map(r => [
    r.mode + (r.projected === true ? ' (projected)' : ''), r.nodes.toLocaleString('en'), fmt(r.sent, 2), fmt(r.received, 2), fmt(r.bytesSent), fmt(r.bytesReceived),
    fmt(r.peerBook), r.joinKnownByAllMs === undefined ? (r.projected === true ? '-' : 'not within bound') : `${r.joinKnownByAllMs} ms`, r.projected === true ? '-' : r.wallS.toFixed(1), r.projected === true ? '-' : fmt(r.rssMB)
  ])
  console.log(`| ${head.join(' | ')} |`)
  console.log(`|${head.map(() => '---').join('|')}|`)
  for (const l of lines) console.log(`| ${l.join(' | ')} |`)
  for (const mode of ['scaled', 'baseline'] as const) {
    const rs = rows.filter(r => r.mode === mode).sort((a, b) => a.nodes - b.nodes)
    for (let i = 1; i < rs.length; i++) {
      const a = rs[i - 1]; const b = rs[i]
      const ratio = b.received / a.received
      const logBound = Math.log(b.nodes) / Math.log(a.nodes)
      console.log(`${mode}: per-node messages received ×${ratio.toFixed(2)} from N=${a.nodes} to N=${b.nodes} (a log N growth allows ×${logBound.toFixed(2)}, linear ×${(b.nodes / a.nodes).toFixed(0)})${ratio <= logBound ? '' : ': ABOVE log N'}`)
    }
  }
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      nodes: { type: 'string', default: '1000' },
      seed: { type: 'string', default: '1' },
      interval: { type: 'string', default: '30s' },
      measure: { type: 'string' },
      latency: { type: 'string', default: '20ms' },
      jitter: { type: 'string', default: '30ms' },
      loss: { type: 'string', default: '0' },
      baseline: { type: 'boolean', default: false },
      sign: { type: 'boolean', default: false },
      table: { type: 'boolean', default: false }
    }
  })
  const intervalMs = ms(values.interval)
  const measureMs = values.measure === undefined ? 2 * intervalMs : ms(values.measure)
  const base: Partial<SimOptions> = {
    seed: Number(values.seed),
    intervalMs,
    signAll: values.sign,
    net: { latencyMs: ms(values.latency), jitterMs: ms(values.jitter), loss: Number(values.loss) }
  }
  const t0 = realNow()
  const rows: Row[] = []
  if (values.table) {
    for (const nodes of [100, 1_000, 10_000]) rows.push(await runOne({ ...base, nodes }, measureMs, 'scaled'))
    // today's hello is O(N²) in all: 10,000 nodes would be 10⁸ deliveries per interval
    rows.push(await runOne({ ...base, nodes: 100 }, measureMs, 'baseline'))
    // 1,000 nodes hear 1,000 hellos per interval each: a tenth of an interval is a steady sample
    const b1000 = await runOne({ ...base, nodes: 1_000 }, Math.min(measureMs, intervalMs / 10), 'baseline')
    rows.push(b1000, project(b1000, 10_000))
  } else {
    rows.push(await runOne({ ...base, nodes: Number(values.nodes) }, measureMs, values.baseline ? 'baseline' : 'scaled'))
  }
  print(rows)
  const mem = process.memoryUsage()
  console.log(`seed ${values.seed}, hello interval ${intervalMs} ms, measured over ${measureMs} virtual ms; wall ${((realNow() - t0) / 1000).toFixed(1)} s, RSS ${fmt(mem.rss / 1e6)} MB, heap ${fmt(mem.heapUsed / 1e6)} MB`)
}

main().then(() => process.exit(0), (err: unknown) => { console.error(err); process.exit(1) })
