import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { silentLogger } from '../../../src/lib/log.js'
import { createVmExecutor } from '../../../src/services/executors/vm.js'
import { S_IFREG, writeCpio } from '../../../src/services/executors/vm/cpio.js'
import type { Executor, WorkloadRef, WorkloadSpec } from '../../../src/services/executors/types.js'
import { STANDARD_PATH, executorContract, untilFileHas, type ShellSpecInput } from './contract.js'

/**
 * The vm executor against real QEMU and the test guest (scripts/vm-setup.sh, run by .ci/run,
 * exports DMS_VM_KERNEL, DMS_VM_INITRD and DMS_VM_ACCEL; the defaults below are where it puts
 * them). A machine without QEMU or the guest skips these tests, saying why; under CI they fail
 * instead of skipping.
 */
const SETUP_DIR = '/var/lib/dms-vm'
const kernel = process.env.DMS_VM_KERNEL ?? join(SETUP_DIR, 'vmlinux')
const initrd = process.env.DMS_VM_INITRD ?? join(SETUP_DIR, 'initrd.cpio')
/**
 * A TCG boot takes ~5 s of a core here, and several at once share two cores with other work:
 * every wait of the contract is bounded by this instead of 30 s. Measured at load average 48 (other
 * work on the machine plus two busy loops): eight VMs started at once each took 205-215 s from
 * start to exit (the guests' kernels logging RCU starvation), all ending correctly.
 */
const LONG = 300_000

const stateRoot = mkdtempSync(join(tmpdir(), 'dms-vm-state-'))
afterAll(() => { rmSync(stateRoot, { recursive: true, force: true }) })

const make = (nodeId: string): Executor => createVmExecutor({ nodeId, stateDir: join(stateRoot, nodeId), kernel, initrd }, { log: silentLogger() })

const prober = make('probe')
const probe = await prober.probe()
await prober.close()
const why = probe.available ? undefined : `${probe.reason}; run scripts/vm-setup.sh as root and export what it prints`
if (why !== undefined && process.env.CI !== undefined) throw new Error(`vm executor tests cannot run in CI: ${why}`)
const skip = why !== undefined ? ` (skipped: ${why})` : ''

function spec (o: ShellSpecInput, command: string[]): WorkloadSpec {
  return {
    allocationId: o.allocationId,
    command,
    env: o.env ?? {},
    workingDir: o.workingDir,
    limits: { cpuCores: 1, ramBytes: 128 * 2 ** 20 },
    ports: [],
    dir: o.dir,
    stdoutPath: join(o.dir, 'stdout.log'),
    stderrPath: join(o.dir, 'stderr.log')
  }
}

/**
 * The guest's processes whose command line holds `marker`, asked of the guest itself (a VM that
 * ended has none). The marker is split in the script, so that the asking shell never matches.
 */
async function guestProcessesWith (ex: Executor, ref: WorkloadRef, marker: string): Promise<number[]> {
  if (!await ex.alive(ref)) return []
  const half = Math.floor(marker.length / 2)
  // One grep over every command line (the glob is expanded before grep runs: its own, which holds
  // the marker whole, is not among them), then the zombie check for the few it names: two
  // processes, not two per process of the guest (an emulated guest on a loaded host is slow).
  const script = `a='${marker.slice(0, half)}'; b='${marker.slice(half)}'; ` +
    'for f in $(grep -l -F "$a$b" /proc/[0-9]*/cmdline 2>/dev/null); do p=${f%/cmdline}; grep -q "^State:.*Z" $p/status 2>/dev/null || echo ${p#/proc/}; done'
  try {
    const r = await ex.exec(ref, ['sh', '-c', script], { timeoutMs: LONG })
    return r.stdout.split('\n').filter(l => /^\d+$/.test(l)).map(Number)
  } catch (err) {
    // The VM ended meanwhile: nothing of it is left.
    if (!await ex.alive(ref)) return []
    throw err
  }
}

describe.skipIf(why !== undefined)(`vm executor${skip}`, () => {
  executorContract('vm', {
    make,
    shellSpec: (o) => spec(o, ['sh', '-c', o.script]),
    missingSpec: (o) => spec({ ...o, script: '' }, ['dms-no-such-command-anywhere', '--flag']),
    workingDir: () => '/tmp/work',
    // busybox sh exports the directory it starts in and its level
    extraEnv: ['PWD', 'SHLVL'],
    processesWith: guestProcessesWith,
    longMs: LONG
  })
})

describe.skipIf(why !== undefined)(`vm executor on this machine${skip}`, () => {
  const cleanups: Array<() => Promise<void>> = []
  afterEach(async () => { for (const c of cleanups.splice(0).reverse()) await c().catch(() => {}) })

  async function setup (o: { kernel?: string } = {}): Promise<{ ex: Executor, nodeId: string, stateDir: string, input: (script: string) => Promise<ShellSpecInput> }> {
    const nodeId = `vm-${randomBytes(4).toString('hex')}`
    const stateDir = join(stateRoot, nodeId)
    const ex = createVmExecutor({ nodeId, stateDir, kernel: o.kernel ?? kernel, initrd }, { log: silentLogger() })
    cleanups.push(async () => {
      for (const r of await ex.list()) { await ex.stop(r, 0); await ex.remove(r) }
      await ex.close()
    })
    let n = 0
    const input = async (script: string): Promise<ShellSpecInput> => ({ allocationId: `a${++n}`, dir: await mkdtemp(join(stateRoot, 'alloc-')), script, env: { PATH: STANDARD_PATH } })
    return { ex, nodeId, stateDir, input }
  }

  it('refuses what a VM cannot run before anything boots, naming the field', async () => {
    const { ex, input } = await setup()
    const base = spec(await input('true'), ['sh', '-c', 'true'])
    const cases: Array<[Partial<WorkloadSpec>, string]> = [
      [{ ports: [{ host: 18080, container: 80, protocol: 'tcp' }] }, 'ports'],
      [{ image: 'busybox' }, 'image'],
      [{ env: { 'A=B': 'x' } }, 'env.A=B'],
      [{ workingDir: 'relative' }, 'workingDir'],
      [{ command: ['sh', '-c', 'two\nlines'] }, 'command.2'],
      [{ limits: { cpuCores: -1, ramBytes: 0 } }, 'limits.cpuCores']
    ]
    for (const [change, field] of cases) {
      const err = await ex.start({ ...base, ...change }).then(() => undefined, (e: unknown) => e)
      expect(err, field).toMatchObject({ name: 'BadRequest', fields: { field } })
    }
    expect(await ex.list()).toEqual([])
  })

  it('a kernel QEMU cannot load: ExecutorUnavailable in QEMU\'s words, nothing left behind', async () => {
    const bad = join(stateRoot, `not-a-kernel-${randomBytes(3).toString('hex')}`)
    await writeFile(bad, 'this is not a kernel\n')
    const { ex, stateDir, input } = await setup({ kernel: bad })
    const err = await ex.start(spec(await input('true'), ['sh', '-c', 'true'])).then(() => undefined, (e: unknown) => e)
    expect(err).toMatchObject({ name: 'ExecutorUnavailable', fields: { executor: 'vm' } })
    expect((err as Error).message).toMatch(/^QEMU did not start the VM: .+/)
    expect(await ex.list()).toEqual([])
    expect(await readdir(stateDir)).toEqual([])
    await rm(bad)
  })

  it.skipIf(cgroupV1Unavailable())('a fractional CPU reservation is a CFS quota on QEMU (cgroup v1 here), its group gone with the VM', async () => {
    const { ex, input } = await setup()
    const s = { ...spec(await input(''), ['sh', '-c', 'echo ready; i=0; while [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done']), limits: { cpuCores: 0.5, ramBytes: 128 * 2 ** 20 } }
    const ref = await ex.start(s)
    // QEMU itself (the pid of the ref) is in the group: the shell that joined it became QEMU
    const line = (await readFile(`/proc/${ref.id}/cgroup`, 'utf8')).split('\n').find(l => l.split(':')[1]?.split(',').includes('cpu'))
    const dir = join('/sys/fs/cgroup/cpu', line?.slice(line.indexOf(':', line.indexOf(':') + 1) + 1) ?? '/nowhere')
    expect(dir).toMatch(/\.vm\//)
    const period = Number(await readFile(join(dir, 'cpu.cfs_period_us'), 'utf8'))
    expect(Number(await readFile(join(dir, 'cpu.cfs_quota_us'), 'utf8'))).toBe(Math.round(0.5 * period))
    expect((await readFile(`/proc/${ref.id}/cmdline`, 'utf8')).split('\0')[0]).toMatch(/qemu-system-x86_64$/)
    await untilFileHas(s.stdoutPath, 'ready', LONG)
    await ex.stop(ref, 2_000)
    await ex.remove(ref)
    expect(existsSync(dir)).toBe(false)
    await ex.close()
    // the node's parent goes with the executor when empty
    expect(existsSync(dirname(dir))).toBe(false)
  }, 3 * LONG)

  it('an exec that ends the workload gets its reply before the guest powers off; one still running then is ended and answered', async () => {
    const { ex, input } = await setup()
    // The workload spins (no sleep) until the exec's file appears: it ends, and the guest with it,
    // while the exec's replier is still writing its answer (before the fix: killed with
    // everything else, the reply lost and the channel closed under the exec).
    const spin = (file: string): string => `i=0; while [ ! -e ${file} ] && [ $i -lt 2000000 ]; do i=$((i+1)); done`
    const a = spec(await input(''), ['sh', '-c', `echo ready; ${spin('go')}; exit 4`])
    const refA = await ex.start(a)
    await untilFileHas(a.stdoutPath, 'ready', LONG)
    const waitedA = ex.wait(refA, { signal: AbortSignal.timeout(LONG) })
    expect(await ex.exec(refA, ['touch', 'go'], { timeoutMs: LONG })).toEqual({ exitCode: 0, stdout: '', stderr: '' })
    expect(await waitedA).toMatchObject({ exitCode: 4, stopped: false })

    const b = spec(await input(''), ['sh', '-c', `echo ready; ${spin('go')}; exit 5`])
    const refB = await ex.start(b)
    await untilFileHas(b.stdoutPath, 'ready', LONG)
    const waitedB = ex.wait(refB, { signal: AbortSignal.timeout(LONG) })
    // The exec outlives the workload it ended: the guest kills it (SIGKILL, 128 + 9) and answers.
    const r = await ex.exec(refB, ['sh', '-c', 'touch go; echo before; sleep 1000; echo after'], { timeoutMs: LONG })
    expect(r).toMatchObject({ exitCode: 137, stdout: 'before\n' })
    expect(await waitedB).toMatchObject({ exitCode: 5, stopped: false })
    // and an exec on the VM that has ended is refused, typed
    await expect(ex.exec(refB, ['true'], { timeoutMs: LONG })).rejects.toMatchObject({ name: 'InvalidState' })
  }, 3 * LONG)

  it('a restarted executor execs in a VM its predecessor had a channel to, and closing with a wait pending rejects that wait only', async () => {
    const { ex, nodeId, stateDir, input } = await setup()
    const s = spec(await input(''), ['sh', '-c', 'echo ready; i=0; while [ ! -e go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; exit 6'])
    const ref = await ex.start(s)
    await untilFileHas(s.stdoutPath, 'ready', LONG)
    expect((await ex.exec(ref, ['echo', 'first'], { timeoutMs: LONG })).stdout).toBe('first\n')
    // observed from the start: close() rejects it before the expectation below could attach
    const abandoned = ex.wait(ref).then(() => undefined, (e: unknown) => e)
    await ex.close()
    expect(await abandoned).toMatchObject({ name: 'NotRunning' })
    const again = createVmExecutor({ nodeId, stateDir, kernel, initrd }, { log: silentLogger() })
    cleanups.push(async () => { await again.close() })
    // QEMU serves one client at a time: the predecessor's connection is gone, the new one answers
    expect((await again.exec(ref, ['echo', 'second'], { timeoutMs: LONG })).stdout).toBe('second\n')
    const waited = again.wait(ref, { signal: AbortSignal.timeout(LONG) })
    await again.exec(ref, ['touch', 'go'], { timeoutMs: LONG })
    expect(await waited).toMatchObject({ exitCode: 6 })
    // closing twice, with nothing pending, resolves
    await again.close()
    await again.close()
  }, 3 * LONG)

  it('a guest of the caller\'s own: its kernel and initramfs, boot arguments after the executor\'s, a root disk read-only', async () => {
    const images = await mkdtemp(join(stateRoot, 'images-'))
    const nodeId = `vm-${randomBytes(4).toString('hex')}`
    const ex = createVmExecutor({ nodeId, stateDir: join(stateRoot, nodeId), kernel, initrd, imageDirs: [images, dirname(kernel)] }, { log: silentLogger() })
    cleanups.push(async () => { for (const r of await ex.list()) { await ex.stop(r, 0); await ex.remove(r) } await ex.close() })
    // An initramfs of our own: the node's guest with one more file, which only it has.
    const mark = `custom-${randomBytes(4).toString('hex')}`
    const own = join(images, 'initrd.cpio')
    const base = await readFile(initrd)
    await writeFile(own, Buffer.concat([base, Buffer.alloc((4 - base.length % 4) % 4), writeCpio([{ name: 'etc/dms-mark', mode: S_IFREG | 0o644, data: Buffer.from(`${mark}\n`) }])]))
    // A raw disk image; the guest sees it as a virtio block device (PCI 1af4:1001). Debian's
    // kernel has virtio-blk as a module, which the test guest does not carry: it is not mounted.
    const disk = join(images, 'root.img')
    await writeFile(disk, Buffer.alloc(1024 * 1024, 7))
    const diskBefore = await readFile(disk)
    const dir = await mkdtemp(join(stateRoot, 'alloc-'))
    const s: WorkloadSpec = {
      ...spec({ allocationId: 'own', dir, script: '' }, ['sh', '-c', 'cat /etc/dms-mark; cat /proc/cmdline; cat /sys/bus/pci/devices/*/vendor /sys/bus/pci/devices/*/device | tr "\\n" " "']),
      env: { PATH: STANDARD_PATH },
      guest: { kernel, initrd: own, rootfs: disk, bootArgs: ` dms.test=${mark} loglevel=3 ` }
    }
    const ref = await ex.start(s)
    expect(await ex.wait(ref, { signal: AbortSignal.timeout(LONG) })).toMatchObject({ exitCode: 0 })
    const [line, cmdline, pci] = (await readFile(s.stdoutPath, 'utf8')).split('\n')
    expect(line).toBe(mark)
    // the executor's arguments first, the caller's after them
    expect(cmdline).toMatch(new RegExp(`^console=ttyS0 .*no_timer_check dms\\.test=${mark} loglevel=3$`))
    expect(pci.split(' ')).toEqual(expect.arrayContaining(['0x1af4', '0x1001']))
    expect((await readFile(disk)).equals(diskBefore)).toBe(true)
    await ex.remove(ref)
  }, 3 * LONG)

  it('refuses guest files and boot arguments it must not take, naming the field, before anything boots', async () => {
    const images = await mkdtemp(join(stateRoot, 'images-'))
    const nodeId = `vm-${randomBytes(4).toString('hex')}`
    const stateDir = join(stateRoot, nodeId)
    const ex = createVmExecutor({ nodeId, stateDir, kernel, initrd, imageDirs: [images] }, { log: silentLogger() })
    cleanups.push(async () => { await ex.close() })
    await symlink('/etc/passwd', join(images, 'escape'))
    await mkdir(join(images, 'a-dir'))
    const dir = await mkdtemp(join(stateRoot, 'alloc-'))
    const base = spec({ allocationId: 'bad', dir, script: '' }, ['sh', '-c', 'true'])
    const cases: Array<[WorkloadSpec['guest'], string]> = [
      [{ kernel: 'vmlinux' }, 'vm.kernel'],
      [{ kernel: `${images}/../${basename(images)}/x` }, 'vm.kernel'],
      [{ initrd: join(images, 'missing') }, 'vm.initrd'],
      [{ rootfs: join(images, 'a-dir') }, 'vm.rootfs'],
      // a file outside the image directories, directly or through a link inside one
      [{ rootfs: '/etc/passwd' }, 'vm.rootfs'],
      [{ rootfs: join(images, 'escape') }, 'vm.rootfs'],
      [{ bootArgs: 'console=ttyS1' }, 'vm.bootArgs'],
      [{ bootArgs: 'quiet rdinit=/bin/sh' }, 'vm.bootArgs'],
      [{ bootArgs: 'panic=0' }, 'vm.bootArgs'],
      [{ bootArgs: 'a -- b' }, 'vm.bootArgs'],
      [{ bootArgs: 'tab\there' }, 'vm.bootArgs'],
      [{ bootArgs: 'x'.repeat(2000) }, 'vm.bootArgs']
    ]
    for (const [guest, field] of cases) {
      const err = await ex.start({ ...base, guest }).then(() => undefined, (e: unknown) => e)
      expect(err, JSON.stringify(guest).slice(0, 80)).toMatchObject({ name: 'BadRequest', fields: { field } })
    }
    expect(await ex.list()).toEqual([])
  })

  it('list finds a running VM whose registry entry is lost, and stop ends it', async () => {
    const { ex, stateDir, input } = await setup()
    const s = spec(await input(''), ['sh', '-c', 'echo ready; i=0; while [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done'])
    const ref = await ex.start(s)
    await untilFileHas(s.stdoutPath, 'ready', LONG)
    for (const f of await readdir(stateDir)) if (f.endsWith('.json')) await rm(join(stateDir, f))
    const found = (await ex.list()).find(r => r.id === ref.id)
    expect(found).toMatchObject({ executor: 'vm', allocationId: s.allocationId, startTime: ref.startTime })
    if (found === undefined) return
    expect(await ex.alive(found)).toBe(true)
    await ex.stop(found, 2_000)
    expect(await ex.alive(ref)).toBe(false)
    // and remove leaves nothing of it: console, initramfs, QEMU's log
    await ex.remove(found)
    expect(await readdir(stateDir)).toEqual([])
  }, 3 * LONG)
})

function cgroupV1Unavailable (): boolean {
  return !existsSync('/sys/fs/cgroup/cpu/cpu.cfs_quota_us') || process.getuid?.() !== 0
}
