import '../../src/lib/polyfill.js'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { addRoot } from '../../src/security/index.js'
import { createLan, faultsUnavailable, heal, partition } from '../../test/e2e/netns.js'
import { Side, type Driver } from '../../test/faults/procs.js'
import setupDrivers from '../../test/faults/setup.js'

/**
 * Memory of a channel's sender whose receiver is silently partitioned while 100,000 messages are
 * offered (issue 8: "bounded by the window and the outbox on disk, not by RAM"). The sender and
 * the receiver are processes of their own (test/faults/driver.ts) in network namespaces joined
 * by a bridge; the partition is iptables DROP on the receiver host's eth0. Baseline: the same
 * sender process, idle with its channel open and connected, measured in the same run.
 *
 * Peak RSS is the kernel's (VmHWM of /proc/<pid>/status, reset with clear_refs before each
 * phase); heap after a forced GC (the driver runs with --expose-gc). Then the partition heals and
 * the outbox drains from disk to the receiver: the drain rate is printed too.
 *
 *   npm run bench:channel:partition          (root, iproute2, iptables; COUNT=100000 PAD=100)
 */
const COUNT = Number(process.env.COUNT ?? 100_000)
/** Bytes of padding per message: ~130 bytes of JSON each, a status update's size. */
const PAD = Number(process.env.PAD ?? 100)
const CHUNK = 1_000
const CHANNELS = { heartbeatMs: 500, heartbeatMisses: 3, rtoMs: 200, rtoMaxMs: 2_000, ackWaitMs: 500, callTimeoutMs: 3_000 }
const run = promisify(execFile)
const MiB = 2 ** 20

/** The kernel's peak RSS of a process since the last reset, in bytes. */
async function peakRss (pid: number): Promise<number> {
  const m = /^VmHWM:\s+(\d+) kB$/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))
  return Number(m?.[1] ?? 0) * 1024
}
/** Resets the peak to the current RSS (clear_refs 5: Linux ≥ 4.0). */
async function resetPeak (pid: number): Promise<void> { await writeFile(`/proc/${pid}/clear_refs`, '5') }
async function heapAfterGc (d: Driver): Promise<{ rss: number, heapUsed: number, external: number }> {
  return (await d.call<{ mem: { rss: number, heapUsed: number, external: number } }>('gc')).mem
}
const mib = (b: number): number => +(b / MiB).toFixed(1)

async function main (): Promise<void> {
  const why = await faultsUnavailable()
  if (why !== undefined) throw new Error(`this benchmark needs network namespaces and iptables: ${why}`)
  setupDrivers()
  const dir = await mkdtemp(join(tmpdir(), 'dms-bench-partition-'))
  const lan = await createLan(2)
  const [hs, hr] = lan.hosts
  let sender: Side | undefined
  let receiver: Side | undefined
  try {
    receiver = await Side.make('receiver', hr, join(dir, 'receiver'), { role: 'receiver', name: 'bench', channels: CHANNELS })
    sender = await Side.make('sender', hs, join(dir, 'sender'), { role: 'sender', channels: CHANNELS, bootstrap: [receiver.addr] }, ['--expose-gc'])
    await addRoot(receiver.config.dir, 'dms', sender.did)
    await receiver.start()
    const s = await sender.start()
    const pid = s.proc.pid as number
    await s.call('open', { to: receiver.did, name: 'bench' })
    // warm: connected, one message through, then the idle baseline
    await s.call('offer', { count: 1, chunk: 1, pad: PAD })
    await s.call('whenAcked', { seq: 1, timeoutMs: 60_000 })
    await s.call('waitFor', { peer: receiver.peerId, state: 'connected', timeoutMs: 60_000 })
    const idle = await heapAfterGc(s)
    await resetPeak(pid)
    // let the idle sender run its heartbeats a while: its peak over the same kind of span
    await new Promise(resolve => setTimeout(resolve, 3_000))
    const idlePeak = await peakRss(pid)

    await partition(receiver.host)
    await s.call('waitFor', { peer: receiver.peerId, state: 'disconnected', timeoutMs: 60_000 })
    await heapAfterGc(s)
    await resetPeak(pid)
    const offered = await s.call<{ last: number, ms: number, peakRss: number }>('offer', { count: COUNT, chunk: CHUNK, pad: PAD })
    const offerPeak = await peakRss(pid)
    const after = await heapAfterGc(s)
    const row = (await s.call<{ channels: Array<{ role: string, outbox: number, inFlight: number }> }>('status')).channels.find(c => c.role === 'sender')
    const du = (await run('du', ['-sb', join(sender.config.dir, 'db')])).stdout.split('\t')[0]

    await heal(receiver.host)
    const t = performance.now()
    await s.call('waitFor', { peer: receiver.peerId, state: 'connected', timeoutMs: 600_000 })
    const reconnectMs = performance.now() - t
    await s.call('whenAcked', { seq: offered.last, timeoutMs: 600_000 })
    const drainMs = performance.now() - t - reconnectMs

    console.log(JSON.stringify({
      setup: 'sender and receiver processes in network namespaces joined by a bridge; receiver silently partitioned (iptables DROP) while the sender is offered the messages; outbox fsynced',
      messages: COUNT,
      messageBytes: JSON.stringify({ n: 99_999, pad: 'x'.repeat(PAD) }).length,
      window: 256,
      idle: { rssMiB: mib(idle.rss), peakRssMiB: mib(idlePeak), heapUsedMiB: mib(idle.heapUsed) },
      partitioned: {
        offerMs: offered.ms,
        peakRssMiB: mib(offerPeak),
        rssAfterGcMiB: mib(after.rss),
        heapUsedAfterGcMiB: mib(after.heapUsed),
        outbox: row?.outbox,
        outboxOnDiskMiB: mib(Number(du))
      },
      ratios: { peakRss: +(offerPeak / idlePeak).toFixed(2), heapUsed: +(after.heapUsed / idle.heapUsed).toFixed(2) },
      // after the heal: until the sender hears the receiver again (TCP's backoff on the stalled connection), then the outbox drained from disk
      heal: { reconnectMs: Math.round(reconnectMs), drainMs: Math.round(drainMs), drainMsgsPerSec: Math.round(COUNT / (drainMs / 1000)) }
    }, null, 2))
  } finally {
    await sender?.driver?.kill9()
    await receiver?.driver?.kill9()
    await lan.destroy()
    await rm(dir, { recursive: true, force: true })
  }
}

await main()
