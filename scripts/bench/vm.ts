import '../../src/lib/polyfill.js'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { silentLogger } from '../../src/lib/log.js'
import { readRssBytes } from '../../src/services/executors/process/proc.js'
import { createProcessExecutor } from '../../src/services/executors/process.js'
import type { Executor, WorkloadRef, WorkloadSpec } from '../../src/services/executors/types.js'
import { createVmExecutor } from '../../src/services/executors/vm.js'

/**
 * `npm run bench:vm [-- --json] [-- --quick]`
 *
 * The vm executor against the process executor, interleaved in one run, for the same command (a
 * shell that prints a line, then idles): `start` → its first line in the stdout file (boot to
 * first output, for a VM), and the memory it then holds on the host (a VM: QEMU's resident set;
 * a process: the workload's), p50 and p90 of each over the rounds, and the ratios. The
 * acceleration used (KVM or TCG) is named. The guest is the one scripts/vm-setup.sh builds
 * (DMS_VM_KERNEL, DMS_VM_INITRD, DMS_VM_ACCEL from its output, or its default directory).
 */
const args = new Set(process.argv.slice(2))
const json = args.has('--json')
/** Each TCG round is one boot, ~8 s of a core: few rounds, one at a time. */
const ROUNDS = args.has('--quick') ? 2 : 6
/** The first boot also reads the kernel and initramfs from disk: not counted. */
const WARMUP = 1
const SETUP_DIR = '/var/lib/dms-vm'
/** A first line, then idle (bounded: it ends by itself after two minutes). */
const SCRIPT = 'echo first-output; i=0; while [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done'
const RAM = 128 * 2 ** 20
/** A boot that has not printed within this long failed (TCG here: ~8 s). */
const FIRST_OUTPUT_WITHIN_MS = 120_000
/** The first line is looked for this often (the file has no event we can wait on across QEMU's writes). */
const POLL_MS = 10

function log (s: string): void { (json ? process.stderr : process.stdout).write(s + '\n') }
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]
}

const root = await mkdtemp(join(tmpdir(), 'dms-bench-vm-'))
const nodeId = `bench-${randomBytes(4).toString('hex')}`
const vm = createVmExecutor({
  nodeId,
  stateDir: join(root, 'vm'),
  kernel: process.env.DMS_VM_KERNEL ?? join(SETUP_DIR, 'vmlinux'),
  initrd: process.env.DMS_VM_INITRD ?? join(SETUP_DIR, 'initrd.cpio')
}, { log: silentLogger() })
const proc = createProcessExecutor({ nodeId, stateDir: join(root, 'process') }, { log: silentLogger() })
const probe = await vm.probe()
if (!probe.available) {
  console.error(`the vm executor is not available here: ${probe.reason}`)
  process.exit(1)
}
log(`vm executor: ${probe.detail}`)

let seq = 0
async function once (ex: Executor): Promise<{ firstMs: number, rssBytes: number, ref: WorkloadRef }> {
  const dir = await mkdtemp(join(root, 'alloc-'))
  const spec: WorkloadSpec = {
    allocationId: `bench-${++seq}`, command: ['sh', '-c', SCRIPT], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
    limits: { cpuCores: 1, ramBytes: RAM }, ports: [], dir, stdoutPath: join(dir, 'stdout.log'), stderrPath: join(dir, 'stderr.log')
  }
  const t0 = performance.now()
  const ref = await ex.start(spec)
  const deadline = Date.now() + FIRST_OUTPUT_WITHIN_MS
  for (;;) {
    if ((await readFile(spec.stdoutPath, 'utf8').catch(() => '')).includes('first-output')) break
    if (Date.now() > deadline) throw new Error(`${ex.name}: no first output within ${FIRST_OUTPUT_WITHIN_MS} ms`)
    await new Promise(resolve => setTimeout(resolve, POLL_MS))
  }
  const firstMs = performance.now() - t0
  const rssBytes = ex.name === 'vm' ? (await readRssBytes(Number(ref.id)) ?? 0) : (await ex.stats(ref)).memoryBytes ?? 0
  return { firstMs, rssBytes, ref }
}

const results: Record<'vm' | 'process', { first: number[], rss: number[] }> = { vm: { first: [], rss: [] }, process: { first: [], rss: [] } }
try {
  for (let round = 0; round < WARMUP + ROUNDS; round++) {
    // Interleaved: both see the same machine load in each round.
    for (const ex of round % 2 === 0 ? [vm, proc] : [proc, vm]) {
      const r = await once(ex)
      await ex.stop(r.ref, 5_000)
      await ex.remove(r.ref)
      if (round < WARMUP) continue
      const into = results[ex.name as 'vm' | 'process']
      into.first.push(r.firstMs)
      into.rss.push(r.rssBytes)
    }
  }
} finally {
  await vm.close()
  await proc.close()
  await rm(root, { recursive: true, force: true })
}

const accel = probe.detail.includes('KVM') && !probe.detail.includes('no KVM') ? 'kvm' : 'tcg'
const MiB = 2 ** 20
const summary = {
  accel,
  rounds: ROUNDS,
  vm: { firstOutputMs: { p50: pct(results.vm.first, 50), p90: pct(results.vm.first, 90) }, rssMiB: { p50: pct(results.vm.rss, 50) / MiB } },
  process: { firstOutputMs: { p50: pct(results.process.first, 50), p90: pct(results.process.first, 90) }, rssMiB: { p50: pct(results.process.rss, 50) / MiB } }
}
if (json) {
  console.log(JSON.stringify(summary))
} else {
  log(`acceleration: ${accel}, ${ROUNDS} rounds after ${WARMUP} of warm-up, VM ${RAM / MiB} MiB / 1 vCPU`)
  log(`start → first output: vm p50 ${summary.vm.firstOutputMs.p50.toFixed(0)} ms (p90 ${summary.vm.firstOutputMs.p90.toFixed(0)}), process p50 ${summary.process.firstOutputMs.p50.toFixed(1)} ms (p90 ${summary.process.firstOutputMs.p90.toFixed(1)}): ${(summary.vm.firstOutputMs.p50 / summary.process.firstOutputMs.p50).toFixed(0)}×`)
  log(`memory on the host once running: vm p50 ${summary.vm.rssMiB.p50.toFixed(1)} MiB (QEMU's RSS), process p50 ${summary.process.rssMiB.p50.toFixed(2)} MiB: +${(summary.vm.rssMiB.p50 - summary.process.rssMiB.p50).toFixed(1)} MiB per VM`)
}
