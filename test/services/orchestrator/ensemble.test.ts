import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { BadRequest, isDmsError } from '../../../src/lib/errors.js'
import { checkEnsemble, parseEnsemble, planEnsemble, substitute } from '../../../src/services/orchestrator/ensemble.js'
import type { Ensemble } from '../../../src/services/orchestrator/ensemble-types.js'

const FIXTURES = join(import.meta.dirname, '../../fixtures/ensembles')
const fixture = (name: string): string => readFileSync(join(FIXTURES, name), 'utf8')
const dms = (name: string): Ensemble => parseEnsemble(fixture(`dms/${name}`), { env: {}, source: name })

const GiB = 2 ** 30
const MiB = 2 ** 20

/** The error parseEnsemble throws (failing the test if it throws none or another kind). */
function refusal (text: string, env: Record<string, string> = {}): BadRequest {
  try {
    parseEnsemble(text, { env })
  } catch (err) {
    expect(isDmsError(err, 'BadRequest')).toBe(true)
    return err as BadRequest
  }
  throw new Error('expected parseEnsemble to refuse the file')
}

/** The paths of the issues, in order. */
const paths = (text: string, env: Record<string, string> = {}): string[] => refusal(text, env).fields.paths as string[]

/** A valid one-allocation file around an allocation body (indented 4) and a node body. */
function one (alloc: string, extra = ''): string {
  return `version: V1
allocations:
  a:
${alloc.split('\n').map(l => `    ${l}`).join('\n')}
nodes:
  n:
    allocations: [a]
${extra}`
}

const PROCESS = `executor: process
resources:
  cpu: { cores: 0.5 }
  ram: { size: 64MiB }
execution:
  cmd: [sleep, '60']`

describe('DMS ensemble files parse as written', () => {
  it('docker_hello: a docker task with 1 GiB of RAM and disk, stay_down', () => {
    const e = dms('docker_hello.yaml')
    const a = e.allocations.alloc1
    expect(a.type).toBe('task')
    expect(a.executor).toBe('docker')
    expect(a.execution.image).toBe('hello-world')
    expect(a.resources).toEqual({ cpuCores: 1, ramBytes: GiB, diskBytes: GiB, gpus: [] })
    expect(a.failureRecovery).toBe('stay_down')
    expect(e.nodes.node1.failureRecovery).toBe('stay_down')
    expect(e.notes).toContain('allocations.alloc1.resources.ram.size: bare 1 read as 1 GiB; write 1GiB (or 1GB for 10^9 bytes) to say so')
  })

  it('multiple_allocation: bare 2048 RAM is 2048 MiB, two nodes each publishing 8080', () => {
    const e = dms('multiple_allocation.yaml')
    expect(e.allocations.alloc1.resources.ramBytes).toBe(2048 * MiB)
    expect(e.allocations.alloc1.resources.ramBytes).toBe(2 * GiB)
    expect(e.allocations.alloc1.type).toBe('service')
    expect(e.allocations.alloc2.execution.command).toEqual(['tail', '-f', '/dev/null'])
    expect(e.nodes.node1.ports).toEqual([{ public: 8080, private: 80, allocation: 'alloc1', protocol: 'tcp' }])
    expect(e.nodes.node2.ports).toEqual([{ public: 8080, private: 80, allocation: 'alloc2', protocol: 'tcp' }])
    expect(e.notes).toContain('allocations.alloc1.resources.ram.size: bare 2048 read as 2048 MiB; write 2048MiB or 2GiB to say so')
  })

  it('multiple_nginx: four allocations from one anchor, nodeB runs two with ports 50002 and 50003', () => {
    const e = dms('multiple_nginx.yaml')
    expect(Object.keys(e.allocations)).toEqual(['nginx-nodeA', 'nginx-nodeC', 'nginx-nodeB', 'nginx-B-nodeB'])
    for (const a of Object.values(e.allocations)) {
      expect(a.execution).toEqual({ image: 'nginxdemos/hello:plain-text', env: {}, workingDir: '/' })
      expect(a.healthcheck).toMatchObject({ type: 'command', command: ['nginx', '-t'] })
    }
    expect(e.nodes.nodeB.allocations).toEqual(['nginx-nodeB', 'nginx-B-nodeB'])
    expect(e.nodes.nodeB.ports.map(p => [p.allocation, p.public])).toEqual([['nginx-nodeB', 50002], ['nginx-B-nodeB', 50003]])
    expect(e.ignored).toContain('subnet')
    expect(e.ignored).toContain('allocations.nginx-nodeA.keys')
    expect(e.ignored).toContain('allocations.nginx-B-nodeB.provision')
  })

  it('nginx-with-redundancy: command health check with contains; dns_name wins over dnsname', () => {
    const e = dms('nginx-with-redundancy.yaml')
    expect(e.allocations.nginx1.healthcheck).toEqual({
      type: 'command', command: ['echo', 'hello'], contains: 'hello', intervalMs: 10_000, timeoutMs: 5_000, retries: 3, startPeriodMs: 0
    })
    expect(e.allocations.nginx1.execution.command).toEqual(['sleep', '1000'])
    expect(e.allocations.nginx1.dnsName).toBe('nginxdemo-alloc1')
    expect(e.allocations.nginx2.dnsName).toBe('nginxdemo-alloc2')
    expect(e.ignored).toEqual(expect.arrayContaining(['allocations.nginx1.dnsname', 'nodes.node1.redundancy', 'subnet']))
    expect(e.nodes.node2.ports).toEqual([{ public: 7224, private: 80, allocation: 'nginx2', protocol: 'tcp' }])
  })

  it('two-tasks-one-service: args alone become the command', () => {
    const e = dms('two-tasks-one-service.yaml')
    expect(e.allocations['task-one'].execution.command).toEqual(['sh', '-c', "echo 'Task one' && sleep 5"])
    expect(e.allocations['task-two'].type).toBe('task')
    expect(e.allocations['service-one'].type).toBe('service')
    expect(e.allocations['service-one'].dnsName).toBe('serviceone')
    expect(Object.keys(e.nodes)).toEqual(['nodeA', 'nodeB', 'nodeC'])
  })
})

describe('dms example ensembles', () => {
  it('three-services: three process services in a chain, one per node', () => {
    const e = parseEnsemble(fixture('three-services.yaml'), { env: {} })
    const plan = planEnsemble(e)
    expect(plan.layers).toEqual([['a'], ['b'], ['c']])
    expect(plan.nodes.map(n => n.allocations)).toEqual([['a'], ['b'], ['c']])
    expect(plan.nodes[0].resources).toEqual({ cpuCores: 0.1, ramBytes: 32 * MiB, diskBytes: MiB, gpus: [] })
    expect(e.allocations.a.execution.command).toEqual(['sh', '-c', 'while true; do echo tick; sleep 1; done'])
    expect(e.notes).toEqual([])
  })

  it('every-feature: each field lands where the orchestrator reads it', () => {
    const e = parseEnsemble(fixture('every-feature.yaml'), { env: { WEB_IMAGE: 'local/web:1' } })
    const { db, web, migrate } = e.allocations
    expect(db.execution.command).toEqual(['sh', '-c', 'exec nc -lk -p "$DMS_PORT_5432" -e cat'])
    expect(db.execution.env).toEqual({ DB_NAME: 'app', DB_POOL: '8', DB_DEBUG: 'false' })
    expect(db.execution.workingDir).toBe('/tmp')
    expect(db.healthcheck).toEqual({ type: 'tcp', port: 5432, intervalMs: 5000, timeoutMs: 1000, retries: 3, startPeriodMs: 10_000 })
    expect(db.restart).toEqual({ policy: 'on-failure', maxRestarts: 5, windowMs: 600_000, backoff: { baseMs: 1000, maxMs: 30_000 } })
    expect(web.executor).toBe('docker')
    expect(web.execution).toMatchObject({ image: 'local/web:1', entrypoint: ['/bin/sh', '-c'], env: { PRICE: '$5', MODE: 'production' } })
    expect(web.resources).toEqual({ cpuCores: 1.5, ramBytes: 1.5 * GiB, diskBytes: 2e9, gpus: [{ vramBytes: 8 * GiB, vendor: 'nvidia', model: 'A100' }] })
    expect(web.healthcheck).toMatchObject({ type: 'http', port: 8080, path: '/health', intervalMs: 10_000 })
    expect(web.dnsName).toBe('web')
    expect(migrate).toMatchObject({ type: 'task', dependsOn: ['db'], failureRecovery: 'stay_down', restart: { policy: 'never' } })
    expect(e.nodes.data.location).toEqual({ accept: ['EU/DE', 'EU/FR/Paris'], reject: ['NA'] })
    expect(e.nodes.data.labels).toEqual({ tier: 'storage', ssd: 'true' })
    expect(e.nodes.data.peer).toBe('12D3KooWEkm7L3ygiommZfeqqvWBGdzdcuSjVXaqLfTCWNzjcvuD')
    expect(e.nodes.front.peer).toMatch(/^did:key:z/)
    expect(e.nodes.front.ports.map(p => `${p.public ?? ''}/${p.protocol}`)).toEqual(['8080/tcp', '8080/udp'])
    expect(e.supervisor).toEqual({ strategy: 'RestForOne', maxRestarts: 2, windowMs: 300_000 })
    expect(e.ignored).toEqual(['allocations.web.keys', 'allocations.web.provision', 'nodes.front.redundancy', 'subnet'])
    expect(e.notes).toEqual([])
  })
})

describe('YAML', () => {
  it('merge keys: <<: *base with an override', () => {
    const e = parseEnsemble(`version: V1
base: &base
  executor: process
  resources: { cpu: { cores: 1 }, ram: { size: 1GiB } }
  execution: { cmd: [sleep, '1'] }
allocations:
  a:
    <<: *base
    resources: { cpu: { cores: 2 }, ram: { size: 256MiB } }
  b: *base
nodes:
  n: { allocations: [a, b] }
`, { env: {} })
    expect(e.allocations.a.resources.cpuCores).toBe(2)
    expect(e.allocations.a.resources.ramBytes).toBe(256 * MiB)
    expect(e.allocations.a.execution.command).toEqual(['sleep', '1'])
    expect(e.allocations.b.resources.cpuCores).toBe(1)
  })

  it('a syntax error is one issue with its line and column', () => {
    const err = refusal('version: V1\nallocations: [a, b\nnodes: {}\n')
    expect(err.fields.paths).toHaveLength(1)
    expect(err.fields.field).toMatch(/^line \d+, column \d+$/)
    expect(err.fields.field).toMatch(/^line 3,/)
  })

  it('refuses duplicate keys, at their line', () => {
    const ps = paths(one(PROCESS).replace('executor: process', 'executor: process\n    executor: docker'))
    expect(ps).toEqual(['line 5, column 5'])
  })

  it('an alias to an unset anchor is an issue, not a crash', () => {
    expect(paths('version: V1\nallocations: *nope\nnodes: {}\n')).toHaveLength(1)
  })

  it('a document that is not a map', () => {
    expect(paths('- a\n- b\n')).toEqual(['(document)'])
  })
})

describe('top-level keys', () => {
  it('an unknown one is refused, naming the known ones', () => {
    const err = refusal(`${one(PROCESS)}extra: 1\n`)
    expect(err.fields.paths).toEqual(['extra'])
    expect(err.message).toContain('known: version, allocations, nodes, supervisor, subnet')
  })

  it('one that only carries an anchor used elsewhere is accepted', () => {
    const text = `version: V1
carrier: &c
  executor: process
  resources: { cpu: { cores: 1 }, ram: { size: 1GiB } }
  execution: { cmd: [sleep, '1'] }
allocations: { a: *c }
nodes: { n: { allocations: [a] } }
`
    expect(parseEnsemble(text, { env: {} }).allocations.a.executor).toBe('process')
    // The same key with its anchor unused is refused.
    expect(paths(text.replace('a: *c', 'a: { executor: process, resources: { cpu: { cores: 1 }, ram: { size: 1GiB } }, execution: { cmd: [x] } }'))).toEqual(['carrier'])
  })

  it('version must be V1', () => {
    expect(paths(one(PROCESS).replace('version: V1', 'version: V2'))).toEqual(['version'])
    expect(paths(one(PROCESS).replace('version: V1\n', ''))).toEqual(['version'])
  })
})

describe('${VAR} substitution', () => {
  const withImage = (image: string): string => one(`executor: docker
resources:
  cpu: { cores: 1 }
  ram:
    size: \${RAM:-128MiB}
execution:
  image: ${image}`)

  it('fills ${VAR} and ${VAR:-default} from opts.env', () => {
    const e = parseEnsemble(withImage('${IMAGE}'), { env: { IMAGE: 'busybox:1' } })
    expect(e.allocations.a.execution.image).toBe('busybox:1')
    expect(e.allocations.a.resources.ramBytes).toBe(128 * MiB)
    expect(parseEnsemble(withImage('x'), { env: { RAM: '1GiB' } }).allocations.a.resources.ramBytes).toBe(GiB)
    // Empty counts as unset for :-.
    expect(parseEnsemble(withImage('x'), { env: { RAM: '' } }).allocations.a.resources.ramBytes).toBe(128 * MiB)
  })

  it('a missing variable without default is an error at its path', () => {
    const err = refusal(withImage('${IMAGE}'))
    expect(err.fields.paths).toEqual(['allocations.a.execution.image'])
    expect(err.message).toContain('IMAGE')
  })

  it('$$ is a literal $, and a lone $ stays', () => {
    expect(substitute('a$$b ${X} $HOME', 'p', { X: 'x' })).toBe('a$b x $HOME')
    expect(parseEnsemble(withImage('"reg/$${IMAGE}"'), { env: {} }).allocations.a.execution.image).toBe('reg/${IMAGE}')
  })

  it('a malformed reference is an error', () => {
    expect(paths(withImage('"${1BAD}"'))).toEqual(['allocations.a.execution.image'])
    expect(paths(withImage('"${OPEN"'))).toEqual(['allocations.a.execution.image'])
  })

  it('defaults to process.env', () => {
    process.env.DMS_ENSEMBLE_TEST_IMAGE = 'from-process-env'
    try {
      expect(parseEnsemble(withImage('${DMS_ENSEMBLE_TEST_IMAGE}')).allocations.a.execution.image).toBe('from-process-env')
    } finally {
      delete process.env.DMS_ENSEMBLE_TEST_IMAGE
    }
  })
})

describe('all errors at once', () => {
  it('four mistakes give four issues with their paths', () => {
    const err = refusal(`version: V1
allocations:
  web:
    executor: docker
    resources:
      cpu: { cores: 1 }
      ram: { size: lots }
    execution: { image: nginx }
    restart: { policy: sometimes }
  job:
    executor: process
    type: task
    resources: { cpu: { cores: 1 }, ram: { size: 1GiB } }
    execution: { cmd: [/bin/true], image: busybox }
    colour: blue
nodes:
  n: { allocations: [web, job] }
`)
    expect(err.name).toBe('BadRequest')
    expect(err.fields.paths).toEqual([
      'allocations.web.resources.ram.size',
      'allocations.web.restart.policy',
      'allocations.job.colour',
      'allocations.job.execution.image'
    ])
    expect(err.fields.field).toBe('allocations.web.resources.ram.size')
    expect(err.fields.issues).toContain("allocations.web.resources.ram.size: not a size: 'lots' (examples: 512MiB, 2GB)")
    // The message lists every issue, one per line.
    for (const line of err.fields.issues as string[]) expect(err.message.split('\n')).toContain(line)
  })

  it('checkEnsemble returns the issues instead of throwing', () => {
    const r = checkEnsemble('version: V1\nallocations: {}\nnodes: {}\n', { env: {} })
    expect(r.ok).toBe(false)
    if (!r.ok) expect(r.issues.map(i => i.path)).toEqual(['allocations', 'nodes'])
  })
})

describe('sizes and cores', () => {
  const ram = (size: string, env: Record<string, string> = {}): Ensemble => parseEnsemble(one(PROCESS.replace('64MiB', size)), { env })

  it('a bare number below 1024 is GiB, noted', () => {
    const e = ram('2')
    expect(e.allocations.a.resources.ramBytes).toBe(2 * GiB)
    expect(e.notes).toEqual(['allocations.a.resources.ram.size: bare 2 read as 2 GiB; write 2GiB (or 2GB for 10^9 bytes) to say so'])
    expect(ram('0.5').allocations.a.resources.ramBytes).toBe(GiB / 2)
  })

  it('a bare number from 1024 is MiB, noted', () => {
    const e = ram('1536')
    expect(e.allocations.a.resources.ramBytes).toBe(1536 * MiB)
    expect(e.notes).toEqual(['allocations.a.resources.ram.size: bare 1536 read as 1536 MiB; write 1536MiB to say so'])
    expect(ram('1024').allocations.a.resources.ramBytes).toBe(GiB)
  })

  it('units: binary and decimal, no note', () => {
    expect(ram('512MiB').allocations.a.resources.ramBytes).toBe(512 * MiB)
    expect(ram('2GB').allocations.a.resources.ramBytes).toBe(2e9)
    expect(ram('1.5GiB').allocations.a.resources.ramBytes).toBe(1.5 * GiB)
    expect(ram('1G').allocations.a.resources.ramBytes).toBe(1e9)
    expect(ram('512MiB').notes).toEqual([])
  })

  it('bad sizes: unknown unit, words, negative, zero RAM, wrong type', () => {
    for (const bad of ['12XB', 'lots', '-1', '0', '0MiB', 'true', '[1]']) {
      expect(paths(one(PROCESS.replace('64MiB', bad))), bad).toEqual(['allocations.a.resources.ram.size'])
    }
  })

  it('cores: fractional allowed, zero and words refused', () => {
    expect(parseEnsemble(one(PROCESS.replace('cores: 0.5', 'cores: 0.25')), { env: {} }).allocations.a.resources.cpuCores).toBe(0.25)
    for (const bad of ['0', 'many', '-1']) {
      expect(paths(one(PROCESS.replace('cores: 0.5', `cores: ${bad}`))), bad).toEqual(['allocations.a.resources.cpu.cores'])
    }
  })

  it('cpu and ram are required, disk is not', () => {
    expect(paths(one(PROCESS.replace('  ram: { size: 64MiB }\n', '')))).toEqual(['allocations.a.resources.ram.size'])
    expect(parseEnsemble(one(PROCESS), { env: {} }).allocations.a.resources.diskBytes).toBe(0)
  })
})

describe('unknown fields', () => {
  it('nested: names the field and lists the known ones', () => {
    const err = refusal(one(PROCESS.replace('cpu: { cores: 0.5 }', 'cpu: { cores: 0.5, clock: 3GHz }')))
    expect(err.fields.paths).toEqual(['allocations.a.resources.cpu.clock'])
    expect(err.message).toContain('known: cores')
  })

  it('in a node and a port', () => {
    expect(paths(one(PROCESS, '    zone: x\n    ports: [{ private: 80, allocation: a, host: 1 }]\n'))).toEqual(['nodes.n.zone', 'nodes.n.ports[0].host'])
  })
})

describe('executors and execution', () => {
  it('firecracker (DMS\'s micro-VM executor) is the vm executor, execution type included; vm as itself too', () => {
    const fc = parseEnsemble(one(PROCESS.replace('executor: process', 'executor: firecracker').replace('execution:', 'execution:\n  type: firecracker')), { env: {}, source: 't' })
    expect(fc.allocations.a.executor).toBe('vm')
    expect(fc.allocations.a.execution.command).toEqual(['sleep', '60'])
    expect(parseEnsemble(one(PROCESS.replace('executor: process', 'executor: vm')), { env: {}, source: 't' }).allocations.a.executor).toBe('vm')
  })

  it('vm executor: image and entrypoint refused, a command required, as for process', () => {
    const VM = PROCESS.replace('executor: process', 'executor: firecracker')
    expect(paths(one(`${VM}\n  image: busybox\n  entrypoint: [sh]`))).toEqual(['allocations.a.execution.image', 'allocations.a.execution.entrypoint'])
    expect(paths(one(VM.replace("cmd: [sleep, '60']", 'working_directory: /tmp')))).toEqual(['allocations.a.execution.cmd'])
    expect(paths(one(VM.replace('execution:', 'execution:\n  type: docker')))).toEqual(['allocations.a.execution.type'])
  })

  it('process executor: image and entrypoint refused, a command required', () => {
    expect(paths(one(`${PROCESS}\n  image: busybox\n  entrypoint: [sh]`))).toEqual(['allocations.a.execution.image', 'allocations.a.execution.entrypoint'])
    expect(paths(one(PROCESS.replace("cmd: [sleep, '60']", 'working_directory: /tmp')))).toEqual(['allocations.a.execution.cmd'])
  })

  it('docker executor needs an image; execution.type must match', () => {
    const docker = PROCESS.replace('executor: process', 'executor: docker')
    expect(paths(one(docker))).toEqual(['allocations.a.execution.image'])
    expect(paths(one(`${docker}\n  image: x\n  type: process`))).toEqual(['allocations.a.execution.type'])
  })

  it('cmd then args; numbers in argv must be quoted', () => {
    const e = parseEnsemble(one(`${PROCESS}\n  args: ['-v']`), { env: {} })
    expect(e.allocations.a.execution.command).toEqual(['sleep', '60', '-v'])
    const err = refusal(one(PROCESS.replace("'60'", '60')))
    expect(err.fields.paths).toEqual(['allocations.a.execution.cmd[1]'])
    expect(err.message).toContain('quote it')
  })

  it('environment: a map of scalars or a list of NAME=value; bad names refused', () => {
    const e = parseEnsemble(one(`${PROCESS}\n  environment: [A=1, B=x=y]`), { env: {} })
    expect(e.allocations.a.execution.env).toEqual({ A: '1', B: 'x=y' })
    expect(paths(one(`${PROCESS}\n  environment: { DMS_X: 1, 9A: 2, OK: [1] }`))).toEqual([
      'allocations.a.execution.environment.DMS_X', 'allocations.a.execution.environment.9A', 'allocations.a.execution.environment.OK'
    ])
  })

  it('wrong types name what was expected and what was found', () => {
    const err = refusal(one(PROCESS.replace("cmd: [sleep, '60']", 'cmd: 3')))
    expect(err.fields.paths).toEqual(['allocations.a.execution.cmd'])
    expect(err.message).toContain('expected a list of strings, got a number')
  })

  it('allocation names are DNS-label-like', () => {
    expect(paths(one(PROCESS).replace('  a:\n', '  -a:\n').replace('[a]', '[-a]'))).toEqual(['allocations.-a'])
  })
})

describe('health checks and restart', () => {
  it('a health check on a task is refused', () => {
    const text = one(`${PROCESS}\ntype: task\nhealthcheck: { type: command, exec: [/bin/true] }`)
    expect(paths(text)).toEqual(['allocations.a.healthcheck'])
  })

  it('timing: durations need a unit; retries bounded by the spec schema', () => {
    expect(paths(one(`${PROCESS}\nhealthcheck: { type: command, exec: [/bin/true], interval: 30 }`))).toEqual(['allocations.a.healthcheck.interval'])
    expect(paths(one(`${PROCESS}\nhealthcheck: { type: command, exec: [/bin/true], interval: 10ms }`))).toEqual(['allocations.a.healthcheck.interval'])
    expect(paths(one(`${PROCESS}\nhealthcheck: { type: command, exec: [/bin/true], retries: 1000 }`))).toEqual(['allocations.a.healthcheck.retries'])
  })

  it('an http check must use one of the allocation\'s private tcp ports', () => {
    const hc = `${PROCESS}\nhealthcheck: { type: http, port: 8080, path: /up }`
    expect(paths(one(hc))).toEqual(['allocations.a.healthcheck.port'])
    const ok = parseEnsemble(one(hc, '    ports: [{ private: 8080, allocation: a }]\n'), { env: {} })
    expect(ok.allocations.a.healthcheck).toMatchObject({ type: 'http', port: 8080, path: '/up' })
  })

  it('fields of another check type are refused', () => {
    expect(paths(one(`${PROCESS}\nhealthcheck: { type: tcp, port: 80, exec: [/bin/true] }`, '    ports: [{ private: 80, allocation: a }]\n'))).toEqual(['allocations.a.healthcheck.exec'])
  })

  it('restart: defaults filled by the spec schema; a task may only say never', () => {
    const e = parseEnsemble(one(`${PROCESS}\nrestart: { policy: always, window: 1m }`), { env: {} })
    expect(e.allocations.a.restart).toEqual({ policy: 'always', maxRestarts: 5, windowMs: 60_000, backoff: { baseMs: 1000, maxMs: 60_000 } })
    expect(paths(one(`${PROCESS}\ntype: task\nrestart: { policy: always }`))).toEqual(['allocations.a.restart.policy'])
    expect(paths(one(`${PROCESS}\nrestart: { policy: always, backoff: { base: 1m, max: 1s } }`))).toEqual(['allocations.a.restart.backoff.max'])
  })

  it('failure_recovery lists the allowed values', () => {
    const err = refusal(one(`${PROCESS}\nfailure_recovery: give_up`))
    expect(err.fields.paths).toEqual(['allocations.a.failure_recovery'])
    expect(err.message).toContain('stay_down, one_for_one, all_for_one, rest_for_one')
  })
})

describe('placement', () => {
  const two = (nodes: string): string => `version: V1
allocations:
  a: { executor: process, resources: { cpu: { cores: 1 }, ram: { size: 1GiB } }, execution: { cmd: [x] } }
  b: { executor: process, resources: { cpu: { cores: 1 }, ram: { size: 1GiB } }, execution: { cmd: [x] } }
nodes:
${nodes}`

  it('an allocation in two nodes, or in none', () => {
    expect(paths(two('  n1: { allocations: [a, b] }\n  n2: { allocations: [b] }\n'))).toEqual(['nodes.n2.allocations[0]'])
    expect(paths(two('  n1: { allocations: [a] }\n'))).toEqual(['allocations.b'])
    expect(paths(two('  n1: { allocations: [a, b, c] }\n'))).toEqual(['nodes.n1.allocations[2]'])
  })

  it('a port on an allocation of another node', () => {
    const err = refusal(two('  n1: { allocations: [a], ports: [{ private: 80, allocation: b }] }\n  n2: { allocations: [b] }\n'))
    expect(err.fields.paths).toEqual(['nodes.n1.ports[0].allocation'])
  })

  it('the same public port twice on one node; tcp and udp are different ports', () => {
    const ports = '[{ public: 80, private: 80, allocation: a }, { public: 80, private: 81, allocation: b }]'
    expect(paths(two(`  n1: { allocations: [a, b], ports: ${ports} }\n`))).toEqual(['nodes.n1.ports[1].public'])
    expect(() => parseEnsemble(two(`  n1: { allocations: [a, b], ports: ${ports.replace('allocation: b', 'allocation: b, protocol: udp')} }\n`), { env: {} })).not.toThrow()
  })

  it('ports are whole numbers in range', () => {
    expect(paths(two('  n1: { allocations: [a, b], ports: [{ public: 70000, private: 0, allocation: a }] }\n'))).toEqual(['nodes.n1.ports[0].public', 'nodes.n1.ports[0].private'])
  })

  it('peer must be a peer id or a did:key', () => {
    expect(paths(two('  n1: { allocations: [a, b], peer: 12D3KooNotReally }\n'))).toEqual(['nodes.n1.peer'])
    expect(paths(two('  n1: { allocations: [a, b], peer: "did:key:zNope" }\n'))).toEqual(['nodes.n1.peer'])
  })

  it('location: a city needs its country', () => {
    expect(paths(two('  n1: { allocations: [a, b], location: { accept: [{ continent: EU, city: Paris }] } }\n'))).toEqual(['nodes.n1.location.accept[0].city'])
  })
})

describe('depends_on', () => {
  const deps = (a: string, b: string, c = '[]'): string => `version: V1
allocations:
  a: { executor: process, resources: { cpu: { cores: 1 }, ram: { size: 1GiB } }, execution: { cmd: [x] }, depends_on: ${a} }
  b: { executor: process, resources: { cpu: { cores: 1 }, ram: { size: 1GiB } }, execution: { cmd: [x] }, depends_on: ${b} }
  c: { executor: process, resources: { cpu: { cores: 1 }, ram: { size: 1GiB } }, execution: { cmd: [x] }, depends_on: ${c} }
nodes:
  n: { allocations: [a, b, c] }
`

  it('unknown and self', () => {
    expect(paths(deps('[zz]', '[b]'))).toEqual(['allocations.a.depends_on[0]', 'allocations.b.depends_on[0]'])
  })

  it('a cycle is named in full, once', () => {
    const err = refusal(deps('[b]', '[c]', '[a]'))
    expect(err.fields.paths).toEqual(['allocations.a.depends_on'])
    expect(err.message).toContain('a cycle: a → b → c → a')
    expect(paths(deps('[b]', '[a]'))).toEqual(['allocations.a.depends_on'])
  })
})

describe('planEnsemble', () => {
  const alloc = (deps: string, cores: string, ram: string, executor = 'process'): string =>
    `{ executor: ${executor}, resources: { cpu: { cores: ${cores} }, ram: { size: ${ram} }, disk: { size: 1MiB } }, execution: { ${executor === 'docker' ? 'image: x' : 'cmd: [x]'} }, depends_on: ${deps} }`

  it('a diamond gives three layers; sums per node', () => {
    const e = parseEnsemble(`version: V1
allocations:
  top: ${alloc('[left, right]', '0.1', '32MiB')}
  left: ${alloc('[base]', '0.2', '64MiB', 'docker')}
  right: ${alloc('[base]', '1', '1GiB')}
  base: ${alloc('[]', '0.5', '128MiB')}
nodes:
  one: { allocations: [top, left], ports: [{ public: 8080, private: 80, allocation: left }], peer: 12D3KooWEkm7L3ygiommZfeqqvWBGdzdcuSjVXaqLfTCWNzjcvuD }
  two: { allocations: [right, base] }
`, { env: {} })
    const plan = planEnsemble(e)
    expect(plan.layers).toEqual([['base'], ['left', 'right'], ['top']])
    expect(plan.nodes[0]).toEqual({
      name: 'one',
      allocations: ['top', 'left'],
      resources: { cpuCores: 0.3, ramBytes: 96 * MiB, diskBytes: 2 * MiB, gpus: [] },
      executors: ['process', 'docker'],
      ports: [{ public: 8080, private: 80, allocation: 'left', protocol: 'tcp' }],
      peer: '12D3KooWEkm7L3ygiommZfeqqvWBGdzdcuSjVXaqLfTCWNzjcvuD'
    })
    expect(plan.nodes[1].resources).toEqual({ cpuCores: 1.5, ramBytes: GiB + 128 * MiB, diskBytes: 2 * MiB, gpus: [] })
    expect(plan.nodes[1].executors).toEqual(['process'])
  })

  it('carries ignored and notes', () => {
    const plan = planEnsemble(dms('multiple_allocation.yaml'))
    expect(plan.notes).toContain('allocations.alloc2.resources.ram.size: bare 2048 read as 2048 MiB; write 2048MiB or 2GiB to say so')
    expect(plan.layers).toEqual([['alloc1', 'alloc2']])
  })

  it('refuses a cycle in a hand-built ensemble', () => {
    const e = dms('multiple_allocation.yaml')
    e.allocations.alloc1.dependsOn = ['alloc2']
    e.allocations.alloc2.dependsOn = ['alloc1']
    expect(() => planEnsemble(e)).toThrow(BadRequest)
  })
})

describe('supervisor', () => {
  it('defaults to OneForOne, 3 restarts a minute', () => {
    expect(parseEnsemble(one(PROCESS), { env: {} }).supervisor).toEqual({ strategy: 'OneForOne', maxRestarts: 3, windowMs: 60_000 })
  })

  it('refuses an unknown strategy and a bare window', () => {
    expect(paths(`${one(PROCESS)}supervisor: { strategy: OneForAll, window: 60 }\n`)).toEqual(['supervisor.strategy', 'supervisor.window'])
  })
})
