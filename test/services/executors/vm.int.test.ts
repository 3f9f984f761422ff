import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll } from 'vitest'
import { describe } from 'vitest'
import { silentLogger } from '../../../src/lib/log.js'
import { createVmExecutor } from '../../../src/services/executors/vm.js'
import type { Executor, WorkloadRef, WorkloadSpec } from '../../../src/services/executors/types.js'
import { executorContract, type ShellSpecInput } from './contract.js'

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
 * A TCG boot takes ~8 s of a core here, and several at once share two cores with other work:
 * every wait of the contract is bounded by this instead of 30 s.
 */
const LONG = 90_000

const stateRoot = mkdtempSync(join(tmpdir(), 'dms-vm-state-'))
afterAll(() => { rmSync(stateRoot, { recursive: true, force: true }) })

const make = (nodeId: string): Executor => createVmExecutor({ nodeId, stateDir: join(stateRoot, nodeId), kernel, initrd }, { log: silentLogger() })

const probe = await make('probe').probe()
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
  const script = `a='${marker.slice(0, half)}'; b='${marker.slice(half)}'; for p in /proc/[0-9]*; do ` +
    'case "$(tr "\\0" " " < $p/cmdline 2>/dev/null)" in *"$a$b"*) grep -q "^State:.*Z" $p/status 2>/dev/null || echo ${p#/proc/} ;; esac; done'
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
    longMs: LONG,
    // Each is a VM boot: three show that ends seen at once are not lost without eight boots.
    burst: 3
  })
})
