import '../../src/lib/polyfill.js'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import Docker from 'dockerode'
import { silentLogger } from '../../src/lib/log.js'
import { createDockerExecutor, parseDockerHost } from '../../src/services/executors/docker.js'
import type { WorkloadRef } from '../../src/services/executors/types.js'

/**
 * `npm run bench:docker [-- --json] [-- --quick]`
 *
 * The docker executor's start-to-running of a busybox container (create, look up the command,
 * start, inspect: `start()` resolves once it runs) against `podman run -d` of the same container
 * (same image, command, limits, init) on the same engine's storage and configuration, and against
 * the bare API calls (dockerode create + start, nothing else: what the executor adds is its image
 * and command checks, the labels and the inspect), interleaved in one run: p50 and p90 of each,
 * and the ratios of the p50s. The engine is the one
 * scripts/podman-setup.sh sets up (DOCKER_HOST, CONTAINERS_CONF, CONTAINERS_STORAGE_CONF from its
 * output, or its default directory).
 */
const run = promisify(execFile)
const args = new Set(process.argv.slice(2))
const json = args.has('--json')
const ROUNDS = args.has('--quick') ? 5 : 20
/** Rounds run first and not counted: the first start of a command looks it up in the image. */
const WARMUP = 2
const SETUP_DIR = '/var/lib/dms-podman'
const IMAGE = process.env.DMS_TEST_DOCKER_IMAGE ?? 'localhost/dms-busybox:latest'
const DOCKER_HOST = process.env.DOCKER_HOST ?? `unix://${SETUP_DIR}/docker.sock`
const CPUS = 0.5
const MEMORY = 64 * 2 ** 20
/** Each workload would end by itself long after the benchmark (bounded, as every loop here). */
const COMMAND = ['sleep', '600']
/** podman's own CLI must use the storage and configuration the service uses. */
const podmanEnv = {
  ...process.env,
  CONTAINERS_CONF: process.env.CONTAINERS_CONF ?? join(SETUP_DIR, 'containers.conf'),
  CONTAINERS_STORAGE_CONF: process.env.CONTAINERS_STORAGE_CONF ?? join(SETUP_DIR, 'storage.conf')
}

function log (s: string): void { (json ? process.stderr : process.stdout).write(s + '\n') }
const podman = async (...a: string[]): Promise<string> => (await run('podman', a, { env: podmanEnv, timeout: 60_000 })).stdout.trim()
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))])
}

if (!existsSync(podmanEnv.CONTAINERS_CONF)) {
  console.error(`no podman set-up at ${SETUP_DIR}: run scripts/podman-setup.sh as root first`)
  process.exit(1)
}
const nodeId = `bench-${randomBytes(4).toString('hex')}`
const ex = createDockerExecutor({ nodeId, dockerHost: DOCKER_HOST, hostIp: '127.0.0.1' }, { log: silentLogger() })
const probe = await ex.probe()
if (!probe.available) {
  console.error(probe.reason)
  process.exit(1)
}
const dir = await mkdtemp(join(tmpdir(), 'dms-bench-docker-'))
const refs: WorkloadRef[] = []
const podmanIds: string[] = []
const bareIds: string[] = []
const engine = new Docker(parseDockerHost(DOCKER_HOST))
const times = { executor: [] as number[], podman: [] as number[], bare: [] as number[] }
const ORDERS = [['executor', 'podman', 'bare'], ['podman', 'bare', 'executor'], ['bare', 'executor', 'podman']] as const
try {
  log(`engine: ${probe.detail}; image ${IMAGE}; ${WARMUP} warm-up + ${ROUNDS} timed rounds, executor, \`podman run -d\` and bare API calls interleaved`)
  for (let i = 0; i < WARMUP + ROUNDS; i++) {
    const allocationId = `bench-${i}`
    const allocDir = await mkdtemp(join(dir, `${allocationId}-`))
    // rotate which goes first, so none always meets a busier engine
    for (const which of ORDERS[i % ORDERS.length]) {
      const t0 = performance.now()
      if (which === 'executor') {
        refs.push(await ex.start({
          allocationId, image: IMAGE, command: COMMAND, env: { PATH: '/bin' },
          limits: { cpuCores: CPUS, ramBytes: MEMORY }, ports: [], dir: allocDir,
          stdoutPath: join(allocDir, 'stdout.log'), stderrPath: join(allocDir, 'stderr.log')
        }))
      } else if (which === 'bare') {
        const c = await engine.createContainer({
          Image: IMAGE, Cmd: COMMAND, Env: ['PATH=/bin'], Labels: { 'dms.bench': nodeId },
          HostConfig: { Init: true, NanoCpus: CPUS * 1e9, Memory: MEMORY, MemorySwap: MEMORY }
        })
        bareIds.push(c.id)
        await c.start()
      } else {
        podmanIds.push(await podman('run', '-d', '--init', '--cpus', String(CPUS), '--memory', String(MEMORY), '--memory-swap', String(MEMORY),
          '--label', `dms.bench=${nodeId}`, '-e', 'PATH=/bin', IMAGE, ...COMMAND))
      }
      const ms = performance.now() - t0
      if (i >= WARMUP) times[which].push(ms)
    }
    // keep the engine's load the same from round to round: one of each running at a time
    const ref = refs.pop()
    if (ref !== undefined) { await ex.stop(ref, 0); await ex.remove(ref) }
    const id = podmanIds.pop()
    if (id !== undefined) await podman('rm', '-f', '-t', '0', id)
    const bare = bareIds.pop()
    if (bare !== undefined) await engine.getContainer(bare).remove({ force: true })
  }
  const result = {
    rounds: ROUNDS,
    executor: { p50Ms: pct(times.executor, 50), p90Ms: pct(times.executor, 90) },
    podmanRun: { p50Ms: pct(times.podman, 50), p90Ms: pct(times.podman, 90) },
    bareApi: { p50Ms: pct(times.bare, 50), p90Ms: pct(times.bare, 90) },
    ratioP50: Math.round((pct(times.executor, 50) / pct(times.podman, 50)) * 100) / 100,
    ratioP50Bare: Math.round((pct(times.executor, 50) / pct(times.bare, 50)) * 100) / 100
  }
  log(`executor start → running     p50 ${result.executor.p50Ms} ms   p90 ${result.executor.p90Ms} ms`)
  log(`podman run -d (same image)   p50 ${result.podmanRun.p50Ms} ms   p90 ${result.podmanRun.p90Ms} ms`)
  log(`bare API create + start      p50 ${result.bareApi.p50Ms} ms   p90 ${result.bareApi.p90Ms} ms`)
  log(`executor p50 ${result.ratioP50}× podman run -d, ${result.ratioP50Bare}× the bare API calls`)
  if (json) process.stdout.write(JSON.stringify(result) + '\n')
} finally {
  for (const ref of refs) { await ex.stop(ref, 0).catch(() => {}); await ex.remove(ref).catch(() => {}) }
  for (const id of podmanIds) await podman('rm', '-f', '-t', '0', id).catch(() => {})
  for (const id of bareIds) await engine.getContainer(id).remove({ force: true }).catch(() => {})
  await ex.close()
  await rm(dir, { recursive: true, force: true })
}
