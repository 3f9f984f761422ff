import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHardwareService } from '../../src/services/hardware/index.js'
import { log } from './helpers.js'

/**
 * Issue 12, item 7: the GPU probes are children of the daemon and must not see its secrets. A
 * fake `nvidia-smi` first on PATH writes the environment it was given to a file.
 */
describe('hardware probes run with a minimal environment', () => {
  let dir: string
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'dms-hwenv-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  it('an nvidia-smi on PATH sees PATH and the C locale, never DMS_PASSPHRASE or other variables', async () => {
    const dump = join(dir, 'env.txt')
    await writeFile(join(dir, 'nvidia-smi'), `#!/bin/sh\nenv > '${dump}'\nprintf '0, Fake GPU, 1024\\n'\n`)
    await chmod(join(dir, 'nvidia-smi'), 0o755)
    const PATH = `${dir}${delimiter}${process.env.PATH ?? ''}`
    const daemonEnv = { ...process.env, PATH, DMS_PASSPHRASE: 'hunter2-passphrase', DMS_HOME: '/somewhere', SOME_TOKEN: 'tok-123', LANG: 'de_DE.UTF-8' }
    const hw = createHardwareService({ dataDir: dir, env: daemonEnv, gpuCommands: { rocm: false } }, { log })
    // the probe ran (its output was parsed), so the dump is the environment it had
    expect((await hw.spec()).gpus).toMatchObject([{ model: 'Fake GPU' }])
    const seen = Object.fromEntries((await readFile(dump, 'utf8')).trim().split('\n').map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
    expect(Object.keys(seen).filter(k => k.startsWith('DMS_'))).toEqual([])
    expect(JSON.stringify(seen)).not.toContain('hunter2-passphrase')
    expect(seen.SOME_TOKEN).toBeUndefined()
    expect(seen).toMatchObject({ PATH, LANG: 'C', LC_ALL: 'C' })
  })
})
