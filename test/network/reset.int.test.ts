import { afterEach, describe, expect, it } from 'vitest'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, connect as tcpConnect, type AddressInfo, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { DmsError } from '../../src/lib/errors.js'
import { createNode, type Node } from '../../src/node/create-node.js'

const nodes: Node[] = []
const dirs: string[] = []
afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop()
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
})

async function node (config: Record<string, unknown> = {}): Promise<Node> {
  const dir = await mkdtemp(join(tmpdir(), 'dms-reset-'))
  dirs.push(dir)
  const n = await createNode({ dataDir: dir, passphrase: 'reset-test', config: { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, ...config } })
  nodes.push(n)
  return n
}

/** A TCP relay on loopback to `port` whose connections the test can reset (RST both ways). */
async function resettableRelay (port: number): Promise<{ port: number, reset: () => number, close: () => Promise<void> }> {
  const pairs = new Set<[Socket, Socket]>()
  const server = createServer((inbound) => {
    const outbound = tcpConnect(port, '127.0.0.1')
    const pair: [Socket, Socket] = [inbound, outbound]
    pairs.add(pair)
    inbound.pipe(outbound).pipe(inbound)
    const drop = (): void => { pairs.delete(pair); inbound.destroy(); outbound.destroy() }
    inbound.on('error', drop).on('close', drop)
    outbound.on('error', drop).on('close', drop)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    reset: () => {
      const n = pairs.size
      for (const [a, b] of [...pairs]) { a.resetAndDestroy(); b.resetAndDestroy() }
      return n
    },
    close: async () => { for (const [a, b] of pairs) { a.destroy(); b.destroy() } await new Promise<void>(resolve => server.close(() => { resolve() })) }
  }
}

describe('a connection reset under load', () => {
  it('ends every call in flight with a reply or a typed error, rejects nothing unobserved, and recovers', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (err: unknown): void => { unhandled.push(err) }
    process.on('unhandledRejection', onUnhandled)
    const daemon = await node()
    const daemonPort = Number(multiaddr(daemon.addrs()[0]).getComponents().find(c => c.name === 'tcp')?.value)
    const relay = await resettableRelay(daemonPort)
    try {
      const client = await node({ bootstrap: [`/ip4/127.0.0.1/tcp/${relay.port}/p2p/${daemon.peerId}`] })
      await client.invoke(daemon.peerId, '/public/hello', {}, { timeout: 10_000 })

      const outcomes = new Map<string, number>()
      const count = (k: string): void => { outcomes.set(k, (outcomes.get(k) ?? 0) + 1) }
      let stop = false
      let inFlight = 0
      const notify = new Set<() => void>()
      // 1,000 callers, each with one call in flight, retrying at once on failure (as the load client).
      const worker = async (): Promise<void> => {
        for (let i = 0; i < 200 && !stop; i++) {
          inFlight++
          for (const n of notify) n()
          try {
            await client.invoke(daemon.peerId, '/public/hello', {}, { timeout: 10_000 })
            count('ok')
          } catch (err) {
            count(err instanceof DmsError ? err.name : `untyped:${String(err)}`)
          }
        }
      }
      const workers = Array.from({ length: 1_000 }, worker)
      // Reset once every caller has had a call in flight: frames are queued both ways.
      await new Promise<void>((resolve) => { const check = (): void => { if (inFlight >= 1_000) { notify.delete(check); resolve() } }; notify.add(check); check() })
      expect(relay.reset()).toBeGreaterThan(0)
      const afterReset = outcomes.get('ok') ?? 0
      await new Promise<void>((resolve) => { const check = (): void => { if ((outcomes.get('ok') ?? 0) > afterReset + 1_000) { notify.delete(check); resolve() } }; notify.add(check); check() })
      stop = true
      await Promise.all(workers)

      // Every call ended in a reply or a typed error; the reset cost some calls (Unreachable) and
      // then the client reconnected and carried on.
      expect([...outcomes.keys()].filter(k => k.startsWith('untyped:'))).toEqual([])
      expect(outcomes.get('Timeout') ?? 0).toBe(0)
      expect(outcomes.get('Unreachable') ?? 0).toBeGreaterThan(0)
      expect(await client.invoke(daemon.peerId, '/public/hello', {}, { timeout: 10_000 })).toMatchObject({ peerId: daemon.peerId })
      expect(unhandled).toEqual([])
    } finally {
      process.off('unhandledRejection', onUnhandled)
      await relay.close()
    }
  }, 60_000)
})
