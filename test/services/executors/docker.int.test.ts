import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Docker from 'dockerode'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { silentLogger } from '../../../src/lib/log.js'
import { containerName, createDockerExecutor, parseDockerHost } from '../../../src/services/executors/docker.js'
import { LABEL_ALLOCATION, LABEL_NODE } from '../../../src/services/executors/docker/constants.js'
import type { Executor, WorkloadRef, WorkloadSpec } from '../../../src/services/executors/types.js'
import { STANDARD_PATH, executorContract, readText, untilFileHas, type ShellSpecInput } from './contract.js'

/**
 * The docker executor against a real Docker Engine API: in CI, podman's (scripts/podman-setup.sh,
 * run by .ci/run, exports DOCKER_HOST and DMS_TEST_DOCKER_IMAGE). A developer's machine without an
 * engine skips these tests, saying why; under CI they fail instead of skipping.
 */
const SETUP_SOCKET = '/var/lib/dms-podman/docker.sock'
const DOCKER_HOST = process.env.DOCKER_HOST ?? (existsSync(SETUP_SOCKET) ? `unix://${SETUP_SOCKET}` : 'unix:///var/run/docker.sock')
const IMAGE = process.env.DMS_TEST_DOCKER_IMAGE ?? 'localhost/dms-busybox:latest'
const LONG = 30_000
const FIXTURE = fileURLToPath(new URL('./fixtures/start-container.ts', import.meta.url))

const engine = new Docker(parseDockerHost(DOCKER_HOST))

async function unavailable (): Promise<string | undefined> {
  const probe = await createDockerExecutor({ nodeId: 'probe', dockerHost: DOCKER_HOST }, { log: silentLogger() }).probe()
  if (!probe.available) return `${probe.reason}; run scripts/podman-setup.sh as root and export what it prints`
  try {
    await engine.getImage(IMAGE).inspect()
  } catch {
    return `the test image ${IMAGE} is not on the engine at ${DOCKER_HOST}; scripts/podman-setup.sh builds it`
  }
  return undefined
}
const why = await unavailable()
if (why !== undefined && process.env.CI !== undefined) throw new Error(`docker executor tests cannot run in CI: ${why}`)
const skip = why !== undefined ? ` (skipped: ${why})` : ''

const stateRoot = mkdtempSync(join(tmpdir(), 'dms-docker-'))
afterAll(() => { rmSync(stateRoot, { recursive: true, force: true }) })

function spec (o: ShellSpecInput, extra: Partial<WorkloadSpec> = {}): WorkloadSpec {
  return {
    allocationId: o.allocationId,
    image: IMAGE,
    command: ['sh', '-c', o.script],
    env: o.env ?? {},
    workingDir: o.workingDir,
    limits: { cpuCores: 0.5, ramBytes: 256 * 2 ** 20 },
    ports: [],
    dir: o.dir,
    stdoutPath: join(o.dir, 'stdout.log'),
    stderrPath: join(o.dir, 'stderr.log'),
    ...extra
  }
}

const make = (nodeId: string, dockerHost = DOCKER_HOST): Executor =>
  createDockerExecutor({ nodeId, dockerHost, hostIp: '127.0.0.1' }, { log: silentLogger() })

describe.skipIf(why !== undefined)(`docker executor${skip}`, () => {
  executorContract('docker', {
    make: (nodeId) => make(nodeId),
    shellSpec: (o) => spec(o),
    missingSpec: (o) => spec({ ...o, script: 'true' }, { image: `localhost/dms-no-such-image-${randomBytes(3).toString('hex')}:latest` }),
    workingDir: () => '/tmp',
    // podman sets these in every container (HOME and HOSTNAME are Docker's too); busybox sh
    // exports PWD and SHLVL of its own
    extraEnv: ['HOSTNAME', 'HOME', 'container', 'PWD', 'TERM', 'SHLVL']
  })

  describe('docker specifics', () => {
    let ex: Executor
    let nodeId: string
    const started: WorkloadRef[] = []
    let seq = 0

    beforeAll(() => {
      nodeId = `docker-test-${randomBytes(4).toString('hex')}`
      ex = make(nodeId)
    })
    afterEach(async () => {
      for (const ref of started.splice(0)) await ex.remove(ref).catch(() => {})
    })
    afterAll(async () => { await ex.close() })

    async function input (script: string): Promise<ShellSpecInput> {
      const allocationId = `d-${++seq}-${randomBytes(3).toString('hex')}`
      return { allocationId, dir: await mkdtemp(join(stateRoot, `${allocationId}-`)), script, env: { PATH: STANDARD_PATH } }
    }
    async function start (s: WorkloadSpec, on: Executor = ex): Promise<WorkloadRef> {
      const ref = await on.start(s)
      started.push(ref)
      return ref
    }
    /** The engine's containers with this node's label (what `list()` must agree with). */
    async function engineContainers (): Promise<Docker.ContainerInfo[]> {
      return await engine.listContainers({ all: true, filters: JSON.stringify({ label: [`${LABEL_NODE}=${nodeId}`] }) })
    }

    it('labels the container with its node and allocation, and sets the CPU and memory limits', async () => {
      const s = spec(await input(
        'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; ' +
        'cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d" " -f1 /sys/fs/cgroup/cpu.max'
      ), { limits: { cpuCores: 0.25, ramBytes: 48 * 2 ** 20 } })
      const ref = await start(s)
      expect(ref).toMatchObject({ executor: 'docker', limits: 'docker', allocationId: s.allocationId })
      const info = await engine.getContainer(ref.id).inspect()
      expect(info.Config.Labels).toMatchObject({ [LABEL_NODE]: nodeId, [LABEL_ALLOCATION]: s.allocationId })
      expect(info.Name.replace(/^\//, '')).toBe(containerName(nodeId, s.allocationId))
      expect(info.HostConfig).toMatchObject({ NanoCpus: 250_000_000, Memory: 48 * 2 ** 20 })
      expect(await ex.wait(ref, { signal: AbortSignal.timeout(LONG) })).toMatchObject({ exitCode: 0 })
      // the kernel enforces them: the container's own cgroup says so (quota per 100 ms period)
      expect((await readText(s.stdoutPath)).trim().split('\n')).toEqual([String(48 * 2 ** 20), '25000'])
    })

    it('SIGTERM reaches a workload with no handler of its own (an init is PID 1): it ends at once, not after the grace', async () => {
      // a bare PID 1 ignores SIGTERM unless it installs a handler; sleep installs none
      const s = spec(await input('exec sleep 600'))
      const ref = await start(s)
      await ex.stop(ref, LONG)
      expect(await ex.wait(ref, { signal: AbortSignal.timeout(LONG) })).toMatchObject({ exitCode: null, signal: 'SIGTERM', stopped: true })
    })

    it('a workload over its memory limit is killed, and the exit says so', async () => {
      // the shell holds 40 MB of output in a variable: more than the 16 MiB it may have
      const s = spec(await input('x=$(head -c 40000000 /dev/zero | tr "\\0" a); echo survived ${#x}'), { limits: { cpuCores: 0.5, ramBytes: 16 * 2 ** 20 } })
      const ref = await start(s)
      const info = await ex.wait(ref, { signal: AbortSignal.timeout(LONG) })
      // the kernel's OOM killer sends SIGKILL (podman on cgroup v1 does not flag OOMKilled)
      expect(info).toMatchObject({ exitCode: null, signal: 'SIGKILL', stopped: false })
      expect(await readText(s.stdoutPath)).not.toContain('survived')
    })

    it('publishes the leased ports on the host address', async () => {
      const port = await freePort()
      const s = spec(await input('mkdir -p /tmp/www && echo hello-from-container > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www'),
        { ports: [{ host: port, container: 8080, protocol: 'tcp' }] })
      const ref = await start(s)
      const body = await untilOk(async () => await (await fetch(`http://127.0.0.1:${port}/index.html`, { signal: AbortSignal.timeout(2_000) })).text())
      expect(body).toBe('hello-from-container\n')
      const info = await engine.getContainer(ref.id).inspect()
      expect(info.HostConfig.PortBindings).toEqual({ '8080/tcp': [{ HostIp: '127.0.0.1', HostPort: String(port) }] })
      await ex.stop(ref, 5_000)
    })

    it('refuses a port another process holds with PortUnavailable, leaving no container', async () => {
      const server = await listen()
      try {
        const port = (server.address() as { port: number }).port
        const s = spec(await input('sleep 5'), { ports: [{ host: port, container: 8080, protocol: 'tcp' }] })
        const err = await ex.start(s).then(() => undefined, (e: unknown) => e)
        expect(err).toMatchObject({ name: 'PortUnavailable', code: 'PORT_UNAVAILABLE', fields: { port } })
        expect((await engineContainers()).filter(c => c.Labels[LABEL_ALLOCATION] === s.allocationId)).toEqual([])
      } finally {
        await new Promise(resolve => server.close(resolve))
      }
    })

    it('refuses a command that is not in the image with BadRequest naming it, leaving no container', async () => {
      const s = spec(await input(''), { command: ['dms-no-such-command', '--flag'] })
      const err = await ex.start(s).then(() => undefined, (e: unknown) => e)
      expect(err).toMatchObject({ name: 'BadRequest', fields: { field: 'command', command: 'dms-no-such-command' } })
      expect((await engineContainers()).filter(c => c.Labels[LABEL_ALLOCATION] === s.allocationId)).toEqual([])
    })

    it('refuses a missing image with BadRequest naming it, and never pulls', async () => {
      const image = `localhost/dms-absent-${randomBytes(3).toString('hex')}:v1`
      const s = spec(await input('true'), { image })
      const err = await ex.start(s).then(() => undefined, (e: unknown) => e)
      expect(err).toMatchObject({ name: 'BadRequest', fields: { field: 'image', image } })
      await expect(engine.getImage(image).inspect()).rejects.toMatchObject({ statusCode: 404 })
    })

    it('refuses bad limits, env and working dir at once, naming the field', async () => {
      const base = spec(await input('true'))
      const cases: Array<[Partial<WorkloadSpec>, string]> = [
        [{ limits: { cpuCores: -1, ramBytes: 64 * 2 ** 20 } }, 'limits.cpuCores'],
        [{ limits: { cpuCores: 1, ramBytes: 1024 } }, 'limits.ramBytes'],
        [{ env: { 'A=B': 'x' } }, 'env'],
        [{ workingDir: 'relative/dir' }, 'workingDir'],
        [{ image: '' }, 'image'],
        [{ ports: [{ host: 0, container: 80, protocol: 'tcp' }] }, 'ports']
      ]
      for (const [change, field] of cases) {
        const err = await ex.start({ ...base, ...change }).then(() => undefined, (e: unknown) => e)
        expect(err, field).toMatchObject({ name: 'BadRequest', fields: { field } })
      }
      expect((await engineContainers()).filter(c => c.Labels[LABEL_ALLOCATION] === base.allocationId)).toEqual([])
    })

    it('a restarted daemon re-attaches the log where the file ends: nothing lost, nothing twice', async () => {
      // One line per step; the first instance sees some, then "dies"; the workload goes on
      // printing while no daemon follows it; the next instance must append exactly the rest.
      const s = spec(await input(
        'i=1; while [ $i -le 40 ]; do echo "out $i"; echo "err $i" >&2; ' +
        'if [ $i -eq 10 ]; then echo half; fi; if [ $i -eq 20 ]; then while [ ! -e /tmp/go ]; do sleep 0.05; done; fi; ' +
        'i=$((i+1)); done'
      ))
      const first = make(nodeId)
      const ref = await start(s, first)
      await untilFileHas(s.stdoutPath, 'out 20\n')
      await first.close()
      const again = make(nodeId)
      try {
        const waited = again.wait(ref, { signal: AbortSignal.timeout(LONG) })
        await again.exec(ref, ['touch', '/tmp/go'], { timeoutMs: LONG })
        expect(await waited).toMatchObject({ exitCode: 0 })
      } finally {
        await again.close()
      }
      const lines = (n: number, tag: string, extra: (i: number) => string[] = () => []): string =>
        Array.from({ length: n }, (_, k) => [`${tag} ${k + 1}`, ...extra(k + 1)]).flat().map(l => `${l}\n`).join('')
      expect(await readFile(s.stdoutPath, 'utf8')).toBe(lines(40, 'out', i => i === 10 ? ['half'] : []))
      expect(await readFile(s.stderrPath, 'utf8')).toBe(lines(40, 'err'))
    })

    it('after the kill -9 of the daemon mid-log, the next one re-adopts the container and completes the log: nothing lost, nothing twice', async () => {
      const inp = await input('')
      const N = 3000
      // a steady stream, then a pause the test ends (so the kill surely lands mid-stream)
      const script = `i=1; while [ $i -le ${N} ]; do echo "line $i"; if [ $i -eq 1500 ]; then while [ ! -e /tmp/go ]; do sleep 0.05; done; fi; i=$((i+1)); done`
      const daemon = spawn(process.execPath, ['--import', 'tsx', FIXTURE, nodeId, DOCKER_HOST, IMAGE, inp.dir, script], { stdio: ['ignore', 'pipe', 'inherit'] })
      const line = await new Promise<string>((resolve, reject) => {
        let buf = ''
        daemon.stdout.on('data', (b: Buffer) => { buf += b.toString(); if (buf.includes('\n')) resolve(buf.slice(0, buf.indexOf('\n'))) })
        daemon.once('exit', (code) => { reject(new Error(`the stand-in daemon exited (${String(code)}) before printing its ref`)) })
      })
      const ref = JSON.parse(line) as WorkloadRef
      started.push(ref)
      const stdout = join(inp.dir, 'stdout.log')
      await untilFileHas(stdout, 'line 1500\n')
      const gone = new Promise(resolve => daemon.once('exit', resolve))
      daemon.kill('SIGKILL')
      await gone
      expect(await ex.alive(ref)).toBe(true)
      const waited = ex.wait(ref, { signal: AbortSignal.timeout(LONG) })
      await ex.exec(ref, ['touch', '/tmp/go'], { timeoutMs: LONG })
      expect(await waited).toMatchObject({ exitCode: 0, stopped: false })
      // nothing lost, nothing twice (the kill comes as soon as line 1500 is in the file, which is
      // often between a batch's append and the save of its resume point)
      const want = Array.from({ length: N }, (_, k) => `line ${k + 1}\n`).join('')
      expect(await readFile(stdout, 'utf8')).toBe(want)
    })

    it('a resume point left by an earlier container of the allocation is not applied to the next one', async () => {
      const inp = await input('echo one; echo two')
      const s = spec(inp)
      // a point far in the future would drop every line if it were applied
      await writeFile(join(inp.dir, 'docker-logs.json'), JSON.stringify({ id: 'an-earlier-container', point: { ts: '2999-01-01T00:00:00Z', n: 1 }, out: 0, err: 0 }))
      const ref = await start(s)
      await ex.wait(ref, { signal: AbortSignal.timeout(LONG) })
      expect(await readText(s.stdoutPath)).toBe('one\ntwo\n')
    })

    it('starts the same allocation again after an earlier run of it ended (a service restart)', async () => {
      const s = spec(await input('echo run'))
      const first = await start(s)
      await ex.wait(first, { signal: AbortSignal.timeout(LONG) })
      const second = await start(s)
      expect(second.id).not.toBe(first.id)
      await ex.wait(second, { signal: AbortSignal.timeout(LONG) })
      expect(await readText(s.stdoutPath)).toBe('run\nrun\n')
      expect((await engineContainers()).map(c => c.Id)).not.toContain(first.id)
    })

    it('with no engine: probe says why, start is ExecutorUnavailable, nothing is left', async () => {
      const none = make(nodeId, `unix://${join(stateRoot, 'no-engine.sock')}`)
      try {
        const probe = await none.probe()
        expect(probe.available).toBe(false)
        const err = await none.start(spec(await input('true'))).then(() => undefined, (e: unknown) => e)
        expect(err).toMatchObject({ name: 'ExecutorUnavailable', code: 'EXECUTOR_UNAVAILABLE' })
      } finally {
        await none.close()
      }
      expect(() => make(nodeId, 'ftp://nowhere')).toThrow(expect.objectContaining({ name: 'InvalidConfig' }))
    })

    it('probe names the engine', async () => {
      const probe = await ex.probe()
      expect(probe).toMatchObject({ available: true })
    })
  })
})

async function listen (): Promise<Server> {
  const server = createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return server
}

async function freePort (): Promise<number> {
  const server = await listen()
  const port = (server.address() as { port: number }).port
  await new Promise(resolve => server.close(resolve))
  return port
}

/** Retries `f` until it resolves (a server in a container starting up), bounded. */
async function untilOk<T> (f: () => Promise<T>, ms = LONG): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    try {
      return await f()
    } catch (err) {
      if (Date.now() > deadline) throw err
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }
}
