import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ChannelServiceInit } from '../../src/channel/index.js'
import { addRoot } from '../../src/security/index.js'
import { jsonSublevel } from '../../src/services/store.js'
import { openDb } from '../../src/store/db.js'
import { CLEAN, checkHistory } from '../channel/history.js'
import { createLan, heal, linkDown, linkUp, partition, type Lan, type LanHost } from '../e2e/netns.js'
import { gate, hold, skipNote, unavailable } from './faults.js'
import { Side, rng } from './procs.js'

/**
 * The reliable channel under real faults (issue 8): a sender and a receiver, each a process of
 * its own (test/faults/driver.ts) in a network namespace of its own, joined by a bridge. The
 * faults: silent partitions (iptables DROP on a host's eth0: packets vanish, TCP just stalls),
 * a loud one (the link down), and kill -9 of either process, restarted from the same data dir.
 * The receiver's handler records each message in its store, in the batch the channel commits
 * with its checkpoint; after the run the test reads that store from disk (both processes killed
 * first) and checks the history: nothing acknowledged lost, nothing handled twice, order kept.
 *
 * Heartbeats 500 ms × 3 and retransmission from 200 ms (up to 2 s): a partition of 2 s or more
 * is seen as `disconnected` by both sides, and recovery after a fault takes seconds, not the
 * defaults' tens of seconds (the protocol is the same; CI time is not).
 */
const CHANNELS: ChannelServiceInit = { heartbeatMs: 500, heartbeatMisses: 3, rtoMs: 200, rtoMaxMs: 2_000, ackWaitMs: 500, callTimeoutMs: 3_000 }
const NAME = 'faults'
const N = 10_000
const SEGMENTS = 10
/** Messages offered per send command, and the pause between commands: 200 messages/s, so that faults land while messages flow. */
const CHUNK = 20
const PACE_MS = 100
/** After a fault, everything sent so far must be acknowledged within this (a 10 s partition's TCP backoff, a restart on a loaded machine). */
const RECOVER_MS = 90_000
const SEED = Number(process.env.FAULTS_SEED ?? (Date.now() % 2_147_483_647))

type Fault = { kind: 'partition', host: 'sender' | 'receiver', ms: number } | { kind: 'kill', side: 'sender' | 'receiver' }

/** 5 silent partitions of 2–10 s (of either host) and 2 kill -9 of each side, in a seeded order, each after a seeded delay into its segment. */
function schedule (random: () => number): Array<{ fault: Fault, afterMs: number }> {
  const faults: Fault[] = [
    ...Array.from({ length: 5 }, (): Fault => ({ kind: 'partition', host: random() < 0.5 ? 'sender' : 'receiver', ms: 2_000 + Math.round(random() * 8_000) })),
    { kind: 'kill', side: 'sender' }, { kind: 'kill', side: 'sender' }, { kind: 'kill', side: 'receiver' }, { kind: 'kill', side: 'receiver' }
  ]
  for (let i = faults.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[faults[i], faults[j]] = [faults[j], faults[i]]
  }
  return faults.map(fault => ({ fault, afterMs: 500 + Math.round(random() * 1_500) }))
}

describe.skipIf(unavailable !== undefined)(`a channel through silent partitions and kill -9, in network namespaces${skipNote}`, () => {
  let dir: string
  let lan: Lan | undefined
  let sender: Side
  let receiver: Side
  /** What the test knows: every send the sender confirmed (seq, msg), and the messages whose send was cut short by a kill. */
  const confirmed: Array<{ seq: number, msg: { n: number } }> = []
  const unconfirmed: Array<{ n: number }> = []
  /** Receiver processes' duplicate counts (each process's last status; lost with it otherwise). */
  const duplicates = new Map<number, number>()

  const host = (which: 'sender' | 'receiver'): LanHost => which === 'sender' ? sender.host : receiver.host
  const startSender = async (): Promise<void> => {
    await sender.start()
    await sender.d.call('open', { to: receiver.did, name: NAME })
  }
  const noteDuplicates = async (): Promise<void> => {
    const r = (await receiver.d.call<{ channels: Array<{ role: string, duplicates?: number }> }>('status')).channels.find(c => c.role === 'receiver')
    duplicates.set(receiver.starts, r?.duplicates ?? 0)
  }
  const lastConfirmed = (): number => confirmed.reduce((m, c) => Math.max(m, c.seq), 0)

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dms-faults-channel-'))
    lan = await createLan(2)
    const [hs, hr] = lan.hosts
    receiver = await Side.make('receiver', hr, join(dir, 'receiver'), { role: 'receiver', name: NAME, channels: CHANNELS })
    sender = await Side.make('sender', hs, join(dir, 'sender'), { role: 'sender', channels: CHANNELS, bootstrap: [] })
    // the receiver takes the sender's key as a root: it may open channels there
    await addRoot(receiver.config.dir, 'dms', sender.did)
    Object.assign(sender.config, { bootstrap: [receiver.addr] })
    await receiver.start()
    await startSender()
  }, 180_000)
  afterAll(async () => {
    await sender?.driver?.kill9()
    await receiver?.driver?.kill9()
    await lan?.destroy()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  it(`delivers ${N} messages once each, in order, through 5 silent partitions of 2–10 s and 2 kill -9 of each side`, async () => {
    const t0 = Date.now()
    const plan = schedule(rng(SEED))
    console.log(`fault schedule (FAULTS_SEED=${SEED}): ${plan.map(p => p.fault.kind === 'kill' ? `kill ${p.fault.side}` : `partition ${p.fault.host} ${p.fault.ms} ms`).join(', ')}`)

    // the offerer: messages n = 1..N, CHUNK at a time, while the faults happen; it waits while the sender is down
    let offered = 0
    let target = 0
    let senderUp = gate()
    senderUp.open()
    let more = gate()
    let drained = gate()
    let offerError: unknown
    const offerer = (async () => {
      // bounded: each turn offers a chunk, or waits for the next segment
      for (let i = 0; i < 2 * N; i++) {
        if (offered >= target) {
          drained.open()
          if (offered >= N) return
          await more.promise
          more = gate()
          continue
        }
        await senderUp.promise
        const from = offered + 1
        const count = Math.min(CHUNK, target - offered)
        offered += count
        const d = sender.driver
        try {
          if (d === undefined) throw new Error('no sender')
          const r = await d.call<{ sent: Array<[number, number]> }>('send', { from, count })
          for (const [seq, n] of r.sent) confirmed.push({ seq, msg: { n } })
        } catch (err) {
          // killed while the send was in flight: written or not, we cannot know (the history will say)
          if (d?.alive === true) throw err
          for (let n = from; n < from + count; n++) unconfirmed.push({ n })
        }
        await hold(PACE_MS)
      }
    })().catch((err: unknown) => { offerError = err; drained.open() })
    const offerUpTo = (t: number): void => { drained = gate(); target = t; more.open() }
    /** Everything confirmed so far is acknowledged (handled and committed at the receiver): the event that says we recovered. */
    const caughtUp = async (): Promise<number> => {
      const t = Date.now()
      await sender.d.call('whenAcked', { seq: lastConfirmed(), timeoutMs: RECOVER_MS })
      return Date.now() - t
    }

    const recoveries: string[] = []
    for (let seg = 0; seg < SEGMENTS; seg++) {
      offerUpTo(Math.round(N * (seg + 1) / SEGMENTS))
      const step = plan[seg]
      if (step !== undefined) {
        await hold(step.afterMs)
        const f = step.fault
        if (f.kind === 'partition') {
          await partition(host(f.host))
          await hold(f.ms)
          await heal(host(f.host))
        } else if (f.side === 'sender') {
          senderUp = gate()
          await sender.d.kill9()
          await startSender()
          senderUp.open()
        } else {
          await noteDuplicates()
          await receiver.d.kill9()
          await receiver.start()
        }
        const ms = await caughtUp()
        recoveries.push(`${f.kind === 'kill' ? `kill ${f.side}` : `partition ${f.host} ${f.ms} ms`}: caught up ${ms} ms after`)
      }
      // the segment's messages are all offered before the next fault
      await drained.promise
      if (offerError !== undefined) throw offerError
    }
    await offerer
    if (offerError !== undefined) throw offerError

    // the end: the sender's last number (messages whose send was cut short may be in its outbox) acknowledged
    const s = (await sender.d.call<{ channels: Array<{ role: string, nextSeq: number, acked: number }> }>('status')).channels.find(c => c.role === 'sender')!
    const last = s.nextSeq - 1
    await sender.d.call('whenAcked', { seq: last, timeoutMs: RECOVER_MS })
    await noteDuplicates()
    const took = Date.now() - t0

    // the durable history: both processes killed, the receiver's store read from its data dir
    await sender.d.kill9()
    await receiver.d.kill9()
    const db = await openDb(join(receiver.config.dir, 'db'))
    const handled: Array<{ seq: number, msg: { n: number } }> = []
    let checkpoint = 0
    try {
      for await (const [, v] of jsonSublevel(db, `channel-app/${NAME}`).iterator()) handled.push(v as { seq: number, msg: { n: number } })
      for await (const [, v] of jsonSublevel(db, 'channel-checkpoints').iterator()) checkpoint = (v as { checkpoint: number }).checkpoint
    } finally {
      await db.close()
    }

    // a message whose send was cut short by a kill and was written all the same counts as sent, once
    const confirmedSeqs = new Set(confirmed.map(c => c.seq))
    const maybe = new Set(unconfirmed.map(u => u.n))
    const adopted = handled.filter(h => !confirmedSeqs.has(h.seq) && maybe.delete(h.msg.n))
    const v = checkHistory({ sent: [...confirmed, ...adopted], handled, acked: last })
    const ns = handled.map(h => h.msg.n)
    const dupTotal = [...duplicates.values()].reduce((a, b) => a + b, 0)
    console.log([
      `headline: offered ${offered}, sent (send confirmed) ${confirmed.length}, cut short by a kill ${unconfirmed.length} (of which written and delivered ${adopted.length}),`,
      `numbered ${last}, acknowledged ${last}, handled ${handled.length} (checkpoint on disk ${checkpoint}), duplicates dropped by the receiver ≥ ${dupTotal},`,
      `lost ${v.lost.length}, reordered ${v.reordered.length}, handled twice ${v.duplicated.length}, altered ${v.altered.length}; total ${(took / 1000).toFixed(1)} s`,
      `  ${recoveries.join('\n  ')}`
    ].join('\n'))
    expect(v).toEqual(CLEAN)
    expect(new Set(ns).size).toBe(ns.length) // no message handled under two numbers either
    expect(handled.map(h => h.seq)).toEqual(Array.from({ length: last }, (_, i) => i + 1))
    expect(checkpoint).toBe(last)
    expect(last).toBe(confirmed.length + adopted.length)
    expect(offered).toBe(N)
    expect(sender.starts).toBe(3)
    expect(receiver.starts).toBe(3)
  }, 600_000)

  it('delivers through a loud fault too: the link of either host down and up again', async () => {
    // both processes were killed at the end of the headline: start them again on their data dirs
    await receiver.start()
    await startSender()
    const sent: Array<{ seq: number, msg: { n: number } }> = []
    const send = async (from: number, count: number): Promise<void> => {
      const r = await sender.d.call<{ sent: Array<[number, number]> }>('send', { from, count })
      for (const [seq, n] of r.sent) sent.push({ seq, msg: { n } })
    }
    for (const [i, which] of (['receiver', 'sender'] as const).entries()) {
      await send(N + 1 + i * 1_000, 500)
      await linkDown(host(which))
      await send(N + 501 + i * 1_000, 500)
      // the sender finds the receiver gone: a loud fault on its own host fails its calls at once, on the other host its heartbeats
      await sender.d.call('waitFor', { peer: receiver.peerId, state: 'disconnected', timeoutMs: 30_000 })
      await linkUp(host(which))
      await sender.d.call('whenAcked', { seq: sent[sent.length - 1].seq, timeoutMs: RECOVER_MS })
    }
    await sender.d.kill9()
    await receiver.d.kill9()
    const db = await openDb(join(receiver.config.dir, 'db'))
    const handled: Array<{ seq: number, msg: unknown }> = []
    try {
      for await (const [, v] of jsonSublevel(db, `channel-app/${NAME}`).iterator()) if ((v as { seq: number }).seq >= sent[0].seq) handled.push(v as { seq: number, msg: unknown })
    } finally {
      await db.close()
    }
    console.log(`link down: sent ${sent.length}, handled ${handled.length}`)
    expect(checkHistory({ sent, handled, acked: sent[sent.length - 1].seq })).toEqual(CLEAN)
    expect(handled.length).toBe(2_000)
  }, 300_000)
})
