import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cleanup, eventually, startDaemon, type Daemon } from './harness.js'
import { createLan, lanUnavailable, type Lan } from './netns.js'

/**
 * mDNS on a LAN (issue 2: "mDNS on the LAN, on by default, `--no-mdns` to disable"). Multicast
 * does not work on loopback, so the daemons run in network namespaces joined by a bridge
 * (test/e2e/netns.ts), with no bootstrap peer: whatever they find, they found by mDNS. CI runs as
 * root with iproute2 installed and must not skip this; a developer's machine without them skips
 * it, saying why.
 */
const unavailable = await lanUnavailable()
if (unavailable !== undefined && process.env.CI !== undefined) throw new Error(`mDNS tests cannot run in CI: ${unavailable}`)

interface Peer { id: string, did?: string, connected: boolean }
const peersOf = async (d: Daemon): Promise<Peer[]> => (await d.cliJson<{ peers: Peer[] }>(['actor', 'cmd', '/dms/node/peers/list'])).peers

describe.skipIf(unavailable !== undefined)(`mDNS on a LAN of network namespaces${unavailable !== undefined ? ` (skipped: ${unavailable})` : ''}`, () => {
  let lan: Lan | undefined
  let a: Daemon | undefined
  let b: Daemon | undefined
  let c: Daemon | undefined

  beforeAll(async () => {
    lan = await createLan(3)
    const [ha, hb, hc] = lan.hosts
    // B first and with mDNS off; then A and C with the default (on)
    b = await startDaemon({ lan: hb, args: ['--no-mdns'] })
    ;[a, c] = await Promise.all([startDaemon({ lan: ha }), startDaemon({ lan: hc })])
  }, 60_000)
  afterAll(async () => {
    await cleanup([a, b, c])
    await lan?.destroy()
  })

  it('finds a peer with no bootstrap, learns its DID, and invokes it', async () => {
    // A and C know nothing of each other but what mDNS tells them (then hello gives the DID)
    const found = await eventually(async () => (await peersOf(a!)).find(p => p.id === c!.info.peerId && p.did === c!.info.did && p.connected), 20_000, 250)
    expect(found).toMatchObject({ did: c!.info.did })
    const hello = await a!.cliJson<{ did: string, peerId: string }>(['actor', 'cmd', '/public/hello', '--dest', c!.info.did])
    expect(hello).toEqual({ did: c!.info.did, peerId: c!.info.peerId })
  })

  it('stays off mDNS with --no-mdns', async () => {
    // A found C above, by an mDNS query that B — up since before C — would have answered too.
    // One more query round of A's peers is well past any answer in flight.
    await eventually(async () => (await peersOf(c!)).some(p => p.id === a!.info.peerId && p.connected), 20_000, 250)
    for (const d of [a!, c!]) expect((await peersOf(d)).map(p => p.id)).not.toContain(b!.info.peerId)
    expect(await peersOf(b!)).toEqual([])
  })
})
