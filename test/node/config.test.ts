import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { DEFAULT_CONFIG, loadConfig } from '../../src/node/config.js'

describe('config: defaults ← config.json ← DMS_* env ← flags', () => {
  let dir: string
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'dms-cfg-')) })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  it('uses the defaults with nothing set', async () => {
    expect(await loadConfig(dir, {}, {})).toEqual(DEFAULT_CONFIG)
  })

  it('layers file, env and flags in that order', async () => {
    await writeFile(join(dir, 'config.json'), JSON.stringify({ apiPort: 1111, mdns: false, ports: { min: 20000 } }))
    const c = await loadConfig(dir, { apiPort: 3333 }, { DMS_API_PORT: '2222', DMS_BOOTSTRAP: '/ip4/127.0.0.1/tcp/1/p2p/x' })
    expect(c.apiPort).toBe(3333)
    expect(c.mdns).toBe(false)
    expect(c.ports).toEqual({ min: 20000, max: 65535 })
    expect(c.bootstrap).toEqual(['/ip4/127.0.0.1/tcp/1/p2p/x'])
    expect(c.signAllEnvelopes).toBe(false)
    expect((await loadConfig(dir, {}, { DMS_SIGN_ALL_ENVELOPES: 'yes' })).signAllEnvelopes).toBe(true)
  })

  it('refuses an unknown key, naming it', async () => {
    await writeFile(join(dir, 'config.json'), JSON.stringify({ apiPort: 1, lisen: [] }))
    await expect(loadConfig(dir, {}, {})).rejects.toMatchObject({ name: 'InvalidConfig', message: expect.stringContaining("'lisen'") })
    await writeFile(join(dir, 'config.json'), JSON.stringify({ ports: { min: 1, maxx: 2 } }))
    await expect(loadConfig(dir, {}, {})).rejects.toMatchObject({ name: 'InvalidConfig', message: expect.stringContaining("'ports.maxx'") })
  })

  it('refuses bad values from the environment', async () => {
    await expect(loadConfig(dir, {}, { DMS_MDNS: 'maybe' })).rejects.toMatchObject({ name: 'InvalidConfig' })
    await expect(loadConfig(dir, {}, { DMS_API_PORT: '70000' })).rejects.toMatchObject({ name: 'InvalidConfig' })
  })
})
