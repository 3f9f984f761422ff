import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { silentLogger } from '../../../src/lib/log.js'
import { createExecutors, type Executors } from '../../../src/services/executors/index.js'

describe('the executors a node offers', () => {
  let dataDir: string
  let executors: Executors | undefined
  beforeEach(async () => { dataDir = await mkdtemp(join(tmpdir(), 'dms-executors-')) })
  afterEach(async () => {
    await executors?.stop()
    executors = undefined
    await rm(dataDir, { recursive: true, force: true })
  })

  it('offers process, and not docker when no engine answers nor vm without its guest, saying why for each', async () => {
    executors = createExecutors({
      nodeId: 'offer-1',
      dataDir,
      docker: { dockerHost: `unix://${join(dataDir, 'no-engine.sock')}` },
      vm: { kernel: join(dataDir, 'no-kernel'), initrd: join(dataDir, 'no-initrd') }
    }, { log: silentLogger() })
    const status = await executors.start()
    expect(status.map(s => [s.name, s.available])).toEqual([['process', true], ['docker', false], ['vm', false]])
    const [proc, docker, vm] = status
    expect(proc.available && proc.detail).toMatch(/^limits by (cgroup-v1|cgroup-v2|rlimit)/)
    expect(!docker.available && docker.reason).toContain('no-engine.sock')
    // QEMU missing, or (where it is installed) the kernel: either way the reason names what.
    expect(!vm.available && vm.reason).toMatch(/no QEMU|no-kernel/)
    expect(Object.keys(executors.available)).toEqual(['process'])
    expect(executors.get('process').name).toBe('process')
    expect(() => executors?.get('docker')).toThrow(expect.objectContaining({ name: 'ExecutorUnavailable', fields: { executor: 'docker' } }))
    expect(() => executors?.get('vm')).toThrow(expect.objectContaining({ name: 'ExecutorUnavailable', fields: { executor: 'vm' } }))
    expect(() => executors?.get('nope')).toThrow(expect.objectContaining({ name: 'BadRequest', fields: { field: 'executor', executor: 'nope' } }))
    expect(executors.status()).toEqual(status)
  })

  it('builds only the executors enabled, and refuses an unknown one in the configuration', async () => {
    executors = createExecutors({ nodeId: 'offer-2', dataDir, enabled: ['process'] }, { log: silentLogger() })
    expect((await executors.start()).map(s => s.name)).toEqual(['process'])
    expect(() => createExecutors({ nodeId: 'offer-3', dataDir, enabled: ['process', 'nope'] }, { log: silentLogger() }))
      .toThrow(expect.objectContaining({ name: 'InvalidConfig' }))
  })

  it('says docker is unavailable when its configuration is refused', async () => {
    executors = createExecutors({ nodeId: 'offer-4', dataDir, enabled: ['docker'], docker: { dockerHost: 'ftp://nowhere' } }, { log: silentLogger() })
    const [docker] = await executors.start()
    expect(docker).toMatchObject({ name: 'docker', available: false })
  })
})
