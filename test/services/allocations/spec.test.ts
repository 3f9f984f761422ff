import { describe, expect, it } from 'vitest'
import { STANDARD_PATH, parseSpec, restartPolicyOf, workloadEnv } from '../../../src/services/allocations/index.js'

function refusal (input: unknown): unknown {
  try {
    parseSpec(input)
  } catch (err) {
    return err
  }
  throw new Error('accepted')
}

describe('allocation spec', () => {
  it('fills the defaults of a minimal process task', () => {
    const s = parseSpec({ type: 'task', command: ['true'] })
    expect(s).toMatchObject({ executor: 'process', env: {}, ports: [], resources: { cpuCores: 0, ramBytes: 0 }, stopGraceMs: 10_000, logs: { maxBytes: 10 * 2 ** 20, keep: 1 } })
    expect(restartPolicyOf(s).policy).toBe('never')
    expect(restartPolicyOf(parseSpec({ type: 'service', command: ['sleep', '9'] }))).toMatchObject({ policy: 'on-failure', maxRestarts: 5 })
  })

  it('refuses unknown fields by name, at any depth', () => {
    expect(refusal({ type: 'task', command: ['true'], bogus: 1 })).toMatchObject({ name: 'BadRequest', fields: { field: 'spec.bogus', unknown: ['bogus'] } })
    expect(refusal({ type: 'service', command: ['x'], restart: { policy: 'always', backof: {} } })).toMatchObject({ name: 'BadRequest', fields: { field: 'spec.restart.backof' } })
    expect(refusal({ type: 'service', command: ['x'], ports: [{ host: 20000, container: 20000, proto: 'tcp' }] })).toMatchObject({ name: 'BadRequest', fields: { field: 'spec.ports.0.proto' } })
  })

  it('names the field of each rule it breaks', () => {
    const cases: Array<[unknown, string]> = [
      [{ type: 'job', command: ['true'] }, 'spec.type'],
      // the spec knows the executors by their own names: firecracker is mapped to vm before it (ensembles, CLI)
      [{ type: 'task', executor: 'firecracker', command: ['true'] }, 'spec.executor'],
      [{ type: 'task', executor: 'vm' }, 'spec.command'],
      [{ type: 'task', executor: 'vm', command: ['true'], image: 'busybox' }, 'spec.image'],
      [{ type: 'service', executor: 'vm', command: ['x'], ports: [{ host: 20000, container: 80 }] }, 'spec.ports'],
      [{ type: 'task' }, 'spec.command'],
      [{ type: 'task', command: ['true'], image: 'busybox' }, 'spec.image'],
      [{ type: 'task', executor: 'docker' }, 'spec.image'],
      [{ type: 'task', command: ['true'], env: { DMS_PASSPHRASE: 'x' } }, 'spec.env.DMS_PASSPHRASE'],
      [{ type: 'task', command: ['true'], env: { '1A': 'x' } }, 'spec.env.1A'],
      [{ type: 'task', command: ['true'], restart: { policy: 'always' } }, 'spec.restart.policy'],
      [{ type: 'task', command: ['true'], healthcheck: { type: 'tcp', port: 20000 } }, 'spec.healthcheck'],
      [{ type: 'service', command: ['x'], ports: [{ host: 20000, container: 80 }, { host: 20001, container: 80 }] }, 'spec.ports.1.container'],
      [{ type: 'service', command: ['x'], ports: [{ host: 20000, container: 20000 }, { host: 20000, container: 20000 }] }, 'spec.ports.1.host'],
      [{ type: 'service', command: ['x'], healthcheck: { type: 'http', port: 20001 }, ports: [{ host: 20000, container: 20000 }] }, 'spec.healthcheck.port'],
      [{ type: 'service', command: ['x'], restart: { policy: 'always', backoff: { baseMs: 500, maxMs: 100 } } }, 'spec.restart.backoff.maxMs'],
      [{ type: 'service', command: ['x'], resources: { cpuCores: -1, ramBytes: 0 } }, 'spec.resources.cpuCores'],
      [{ type: 'service', command: ['x'], stopGraceMs: 3_600_000 }, 'spec.stopGraceMs'],
      [{ type: 'service', command: ['x'], logs: { maxBytes: 10 } }, 'spec.logs.maxBytes']
    ]
    for (const [input, field] of cases) expect(refusal(input), field).toMatchObject({ name: 'BadRequest', code: 'BAD_REQUEST', fields: { field } })
  })
})

describe('workload environment', () => {
  it("is the spec's variables, the allocation id and its ports, and a standard PATH; nothing of the daemon's", () => {
    process.env.DMS_PASSPHRASE = 'the-daemons-secret'
    try {
      const env = workloadEnv({ FOO: 'bar' }, 'a1', [{ host: 20001, container: 80, protocol: 'tcp' }, { host: 20002, container: 53, protocol: 'udp' }], { defaultPath: true })
      expect(env).toEqual({ PATH: STANDARD_PATH, FOO: 'bar', DMS_ALLOCATION_ID: 'a1', DMS_PORT_80: '20001', DMS_PORT_53_UDP: '20002', DMS_PORTS: '20001,20002' })
      expect(workloadEnv({ PATH: '/opt/bin' }, 'a1', [], { defaultPath: true }).PATH).toBe('/opt/bin')
      expect(workloadEnv({}, 'a1', [], { defaultPath: false })).toEqual({ DMS_ALLOCATION_ID: 'a1', DMS_PORTS: '' })
    } finally {
      delete process.env.DMS_PASSPHRASE
    }
  })
})
