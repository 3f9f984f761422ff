import { describe, expect, it } from 'vitest'
import { LocalHub } from '../../src/actor/local-transport.js'
import { ActorSystem } from '../../src/actor/system.js'
import { newIdentity } from '../../src/identity/identity.js'

/** The mailbox's slot accounting, for jobs that end at once, later, or by throwing. */
describe('actor mailbox', () => {
  async function actor (concurrency: number, capacity: number): Promise<ActorSystem['root']> {
    const id = await newIdentity()
    const system = new ActorSystem({ identity: id, transport: new LocalHub().transport(id.peerId), authorizer: { authorize: async () => {} }, behaviors: [], services: {}, limits: { concurrency, capacity } })
    return system.root
  }

  it('frees the slot of a job that throws at once, and the error reaches the caller', async () => {
    const a = await actor(1, 0)
    expect(() => a.admit(() => { throw new Error('bug') })).toThrow('bug')
    expect(a.load).toEqual({ running: 0, queued: 0 })
    expect(a.admit(() => undefined)).toBe(true)
  })

  it('holds a slot until a job\'s promise settles, then runs what waited', async () => {
    const a = await actor(1, 1)
    let release!: () => void
    const held = new Promise<void>(resolve => { release = resolve })
    const ran: string[] = []
    let secondDone!: () => void
    const second = new Promise<void>(resolve => { secondDone = resolve })
    expect(a.admit(async () => { await held; ran.push('first') })).toBe(true)
    expect(a.admit(() => { ran.push('second'); secondDone(); return undefined })).toBe(true)
    expect(a.admit(() => undefined)).toBe(false)
    expect(a.load).toEqual({ running: 1, queued: 1 })
    release()
    await second
    expect(ran).toEqual(['first', 'second'])
    expect(a.load).toEqual({ running: 0, queued: 0 })
  })
})
