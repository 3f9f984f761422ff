import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { z } from 'zod'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createNode, defineBehavior, Unauthorized, type Node } from '../../src/index.js'
import { newIdentity } from '../../src/identity/identity.js'
import type { AnyBehavior } from '../../src/actor/behavior.js'
import { until } from '../actor/system-contract.js'

/** The library surface (src/index.ts): what the daemon is built from. */
describe('createNode (library API)', () => {
  let dir: string
  let a: Node, b: Node
  const config = { listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, helloIntervalMs: 60_000 }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dms-lib-'))
    a = await createNode({ dataDir: join(dir, 'a'), passphrase: 'pw', config })
    b = await createNode({ dataDir: join(dir, 'b'), passphrase: 'pw', config: { ...config, bootstrap: [a.addrs()[0]] } })
  })
  afterAll(async () => {
    await b?.stop()
    await a?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('starts with one key for PeerId and DID, and invokes a peer with a mandatory deadline', async () => {
    expect(a.did).toMatch(/^did:key:z6Mk/)
    expect(a.self).toEqual({ id: a.did, did: a.did, addr: { peer: a.peerId, inbox: 'root' } })
    await expect(b.invoke(a.peerId, '/public/hello', {}, { timeout: 10_000 })).resolves.toEqual({ did: a.did, peerId: a.peerId })
    await expect(b.invoke(a.peerId, '/public/hello', {}, {})).rejects.toMatchObject({ name: 'InvalidArgument' })
  })

  it('refuses another node everything but /public/* until granted', async () => {
    const err = await b.invoke(a.did, '/dms/node/peers/list', {}, { timeout: 10_000 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(Unauthorized)
  })

  it('serves behaviours added with handle(), including broadcast ones over gossipsub', async () => {
    const heard: Array<{ n: number, from: string }> = []
    a.handle(defineBehavior({
      path: '/public/test/add',
      describe: 'adds two numbers',
      request: z.object({ x: z.number(), y: z.number() }),
      response: z.object({ sum: z.number() }),
      needs: [],
      handler: (_s, { x, y }) => ({ sum: x + y })
    }))
    a.handle(defineBehavior({
      path: '/broadcast/test/tick',
      topic: '/test/ticks',
      capability: false, // test topic, open to all
      describe: 'hears ticks',
      request: z.object({ n: z.number() }),
      response: z.object({}),
      needs: [],
      handler: (_s, { n }, call) => { heard.push({ n, from: call.from.id }); return {} }
    }))
    await expect(b.invoke(a.peerId, '/public/test/add', { x: 2, y: 3 }, { timeout: 10_000 })).resolves.toEqual({ sum: 5 })
    // the subscription reaches b's gossipsub a little after a subscribes: publish until heard
    await until(async () => {
      await b.publish('/test/ticks', '/broadcast/test/tick', { n: 1 })
      return heard.length > 0
    })
    expect(heard[0]).toEqual({ n: 1, from: b.did })
  })

  it('delivers one-way sends', async () => {
    let delivered!: (n: number) => void
    const got = new Promise<number>(resolve => { delivered = resolve })
    a.handle(defineBehavior({ path: '/public/test/sink', describe: 'sink', request: z.object({ n: z.number() }), response: z.object({}), needs: [], handler: (_s, r) => { delivered(r.n); return {} } }))
    await b.send(a.peerId, '/public/test/sink', { n: 7 })
    expect(await got).toBe(7)
  })

  it('hosts child actors with keys of their own, reachable by handle', async () => {
    const key = await newIdentity()
    const child = a.actors.system.spawn({
      inbox: 'worker-1',
      identity: key,
      kind: 'worker',
      behaviors: [{ path: '/public/whoami', describe: 'who', request: z.object({}), response: z.object({ id: z.string(), controller: z.string() }), needs: [], handler: () => ({ id: key.did, controller: a.did }) }] as unknown as AnyBehavior[],
      services: {}
    })
    expect(child.handle).toEqual({ id: key.did, did: a.did, addr: { peer: a.peerId, inbox: 'worker-1' } })
    await expect(b.invoke(child.handle, '/public/whoami', {}, { timeout: 10_000 })).resolves.toEqual({ id: key.did, controller: a.did })
    // the child signs its own envelopes: its reply is verified against its key, not the host's
    await expect(child.invoke(b.peerId, '/public/hello', {}, { timeout: 10_000 })).resolves.toMatchObject({ peerId: b.peerId })
    await expect(b.invoke({ ...child.handle, addr: { ...child.handle.addr, inbox: 'nobody' } }, '/public/whoami', {}, { timeout: 10_000 })).rejects.toMatchObject({ name: 'UnknownBehavior' })
  })

  it('refuses a call to a peer no one knows with Unreachable, naming the peer', async () => {
    const nobody = (await newIdentity()).peerId
    // The DHT has an answer (no addresses), so the transport gives up before the deadline.
    const err = await a.invoke(nobody, '/public/status', {}, { timeout: 30_000 }).catch((e: unknown) => e)
    expect(err).toMatchObject({ name: 'Unreachable', fields: { peer: nobody } })
  })

  it('ends a call at the caller\'s deadline when the transport would wait longer (a peer that accepts and never answers)', async () => {
    // A TCP listener that accepts connections and never says a word: a dial to it hangs until
    // the transport's own bound (seconds), well after the short deadline below.
    const sockets = new Set<Socket>()
    const silent = createServer(s => { sockets.add(s); s.on('error', () => {}) })
    await new Promise<void>(resolve => silent.listen(0, '127.0.0.1', resolve))
    const mute = (await newIdentity()).peerId
    const d = await createNode({ dataDir: join(dir, 'd'), passphrase: 'pw', config: { ...config, bootstrap: [`/ip4/127.0.0.1/tcp/${(silent.address() as AddressInfo).port}/p2p/${mute}`] } })
    try {
      let longSettled = false
      const long = d.invoke(mute, '/public/status', {}, { timeout: 120_000 }).then(() => undefined, (e: unknown) => e).finally(() => { longSettled = true })
      const err = await d.invoke(mute, '/public/status', {}, { timeout: 1_500 }).catch((e: unknown) => e)
      expect(err).toMatchObject({ name: expect.stringMatching(/^(Unreachable|Timeout)$/) })
      // The transport had not given up on that peer: a call with a later deadline still waits.
      expect(longSettled).toBe(false)
      // stopping the node ends it too, typed (nothing is left pending)
      await d.stop()
      expect(await long).toMatchObject({ name: expect.stringMatching(/^(Unreachable|Timeout|NotRunning)$/) })
    } finally {
      await d.stop()
      for (const s of sockets) s.destroy()
      await new Promise<void>(resolve => silent.close(() => { resolve() }))
    }
  })

  it('stops cleanly, and a call to the stopped peer is refused with Unreachable, not left to its deadline', async () => {
    const dir2 = join(dir, 'c')
    const c = await createNode({ dataDir: dir2, passphrase: 'pw', config: { ...config, bootstrap: [a.addrs()[0]] } })
    await expect(c.invoke(a.peerId, '/public/status', {}, { timeout: 10_000 })).resolves.toMatchObject({ status: 'running' })
    const peer = c.peerId
    await c.stop()
    // A deadline far beyond this test's own timeout: only the transport's refusal can end it in time.
    await expect(a.invoke(peer, '/public/status', {}, { timeout: 600_000 })).rejects.toMatchObject({ name: 'Unreachable', fields: { peer } })
  })
})
