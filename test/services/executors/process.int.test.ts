import { join } from 'node:path'
import { tmpdir } from 'node:os'
import { mkdtempSync, rmSync } from 'node:fs'
import { afterAll } from 'vitest'
import { silentLogger } from '../../../src/lib/log.js'
import { createProcessExecutor } from '../../../src/services/executors/process.js'
import type { WorkloadSpec } from '../../../src/services/executors/types.js'
import { executorContract, type ShellSpecInput } from './contract.js'

const stateRoot = mkdtempSync(join(tmpdir(), 'dms-process-state-'))
afterAll(() => { rmSync(stateRoot, { recursive: true, force: true }) })

function spec (o: ShellSpecInput, command: string[]): WorkloadSpec {
  return {
    allocationId: o.allocationId,
    command,
    env: o.env ?? {},
    workingDir: o.workingDir,
    limits: { cpuCores: 0.5, ramBytes: 256 * 2 ** 20 },
    ports: [],
    dir: o.dir,
    stdoutPath: join(o.dir, 'stdout.log'),
    stderrPath: join(o.dir, 'stderr.log')
  }
}

executorContract('process', {
  make: (nodeId) => createProcessExecutor({ nodeId, stateDir: join(stateRoot, nodeId) }, { log: silentLogger() }),
  shellSpec: (o) => spec(o, ['sh', '-c', o.script]),
  missingSpec: (o) => spec({ ...o, script: '' }, ['dms-no-such-command-anywhere', '--flag']),
  workingDir: (dir) => join(dir, 'cwd'),
  // dash exports the working directory it starts in.
  extraEnv: ['PWD']
})
