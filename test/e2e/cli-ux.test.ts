import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cleanup, startDaemon, type CliResult, type Daemon } from './harness.js'

/**
 * The `dms` command as operators expect it (issue 9), each item through the CLI against a real
 * daemon in a separate process.
 */

function refusedAs (r: CliResult, name: string, text?: RegExp): void {
  expect(r.stderr.split('\n')[0]).toMatch(new RegExp(`^${name}: `))
  if (text !== undefined) expect(r.stderr).toMatch(text)
  expect(r.code).toBe(1)
}

describe('dms CLI usability (issue 9)', () => {
  let d: Daemon

  beforeAll(async () => { d = await startDaemon() })
  afterAll(async () => { await cleanup([d]) })

  it('1: a bare number in a duration flag is refused with a hint', async () => {
    const user = (await d.cli(['key', 'did'])).stdout.trim()
    const [grant, ttl, timeout, ok] = await Promise.all([
      d.cli(['cap', 'grant', user, '--cap', '/dms/node/peers/list', '--duration', '3600']),
      d.cli(['node', 'resources', 'reserve', 'r1', '--ttl', '60']),
      d.cli(['node', 'status', '--timeout', '5']),
      d.cli(['actor', 'cmd', '/public/status', '--timeout', '5s'])
    ])
    refusedAs(grant, 'InvalidArgument', /--duration 3600 needs a unit, e\.g\. 3600s/)
    refusedAs(ttl, 'InvalidArgument', /--ttl 60 needs a unit/)
    refusedAs(timeout, 'InvalidArgument', /--timeout 5 needs a unit/)
    expect(ok.code).toBe(0)
  })

  it('2: a size needs a unit; refusals show sizes in units', async () => {
    const [bare, huge] = await Promise.all([
      d.cli(['onboard', '--cpu', '1', '--ram', '1.5', '--disk', '1GiB']),
      d.cli(['onboard', '--cpu', '1', '--ram', '1000TiB', '--disk', '1GiB'])
    ])
    refusedAs(bare, 'InvalidArgument', /--ram 1\.5 needs a unit, e\.g\. 1\.5GiB/)
    refusedAs(huge, 'InsufficientResources', /1000 TiB asked, the machine has [\d.]+ (GiB|MiB|TiB)/)
    // nothing was onboarded by either
    expect((await d.cliJson(['onboard', 'status'])).onboarded).toBe(false)
  })
})
