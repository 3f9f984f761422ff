import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { arch, cpus, tmpdir, totalmem } from 'node:os'
import { delimiter, join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHardwareService, parseNvidiaSmi, parseRocmSmi } from '../../src/services/hardware/index.js'
import { log } from './helpers.js'

const MiB = 2 ** 20

/**
 * What the real `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits`
 * prints on a two-GPU machine (memory in MiB, ", " separators, no header).
 */
const NVIDIA_OUT = '0, NVIDIA GeForce RTX 3090, 24576\n1, NVIDIA A100-SXM4-40GB, 40960\n'

/** What `rocm-smi --showproductname --showmeminfo vram --json` prints (ROCm 5.x key spelling). */
const ROCM_OUT = JSON.stringify({
  card0: {
    'Card series': 'Radeon RX 7900 XTX',
    'Card model': '0x744c',
    'Card vendor': 'Advanced Micro Devices, Inc. [AMD/ATI]',
    'Card SKU': 'D7070100',
    'VRAM Total Memory (B)': '25753026560',
    'VRAM Total Used Memory (B)': '1073741824'
  },
  system: { 'Driver version': '6.7.0' }
})

describe('GPU tool output parsers', () => {
  it('parses nvidia-smi CSV, skipping devices whose memory is not reported', () => {
    expect(parseNvidiaSmi(NVIDIA_OUT + '2, NVIDIA A100 MIG 1g.5gb, [N/A]\n\n')).toEqual([
      { vendor: 'NVIDIA', vendorIndex: 0, model: 'NVIDIA GeForce RTX 3090', vramBytes: 24576 * MiB },
      { vendor: 'NVIDIA', vendorIndex: 1, model: 'NVIDIA A100-SXM4-40GB', vramBytes: 40960 * MiB }
    ])
    expect(parseNvidiaSmi('')).toEqual([])
  })

  it('parses rocm-smi JSON in either key spelling, ignoring non-card entries', () => {
    expect(parseRocmSmi(ROCM_OUT)).toEqual([{ vendor: 'AMD', vendorIndex: 0, model: 'Radeon RX 7900 XTX', vramBytes: 25753026560 }])
    const v6 = JSON.stringify({ card1: { 'Card Series': 'AMD Instinct MI210', 'VRAM Total Memory (B)': '68702699520' }, card0: { 'Card Series': 'AMD Instinct MI210', 'VRAM Total Memory (B)': '68702699520' } })
    expect(parseRocmSmi(v6).map(g => g.vendorIndex)).toEqual([0, 1])
    expect(parseRocmSmi('not json')).toEqual([])
  })
})

describe('hardware service', () => {
  let bin: string
  const scripts = async (files: Record<string, string>): Promise<string> => {
    const dir = await mkdtemp(join(bin, 'path-'))
    for (const [name, body] of Object.entries(files)) {
      await writeFile(join(dir, name), body)
      await chmod(join(dir, name), 0o755)
    }
    return dir
  }
  const envWith = (dir: string): NodeJS.ProcessEnv => ({ ...process.env, PATH: `${dir}${delimiter}${process.env.PATH ?? ''}` })

  beforeAll(async () => { bin = await mkdtemp(join(tmpdir(), 'dms-hw-')) })
  afterAll(async () => { await rm(bin, { recursive: true, force: true }) })

  it('detects CPU, RAM and the data dir\'s disk; no GPU tool means no GPUs', async () => {
    const empty = await scripts({})
    const hw = createHardwareService({ dataDir: join(bin, 'not-created-yet', 'data'), env: { PATH: empty } }, { log })
    await hw.start()
    const spec = await hw.spec()
    expect(spec.cpu.threads).toBe(cpus().length)
    expect(spec.cpu.cores).toBeGreaterThan(0)
    expect(spec.cpu.architecture).toBe(arch())
    expect(spec.cpu.model.length).toBeGreaterThan(0)
    expect(spec.ramBytes).toBe(totalmem())
    expect(spec.disk.totalBytes).toBeGreaterThan(0)
    expect(spec.gpus).toEqual([])

    const usage = await hw.usage()
    expect(usage.cpuPercent).toBeGreaterThanOrEqual(0)
    expect(usage.cpuPercent).toBeLessThanOrEqual(100)
    expect(usage.ramUsedBytes).toBeLessThanOrEqual(usage.ramTotalBytes)
    expect(usage.diskUsedBytes + usage.diskFreeBytes).toBeLessThanOrEqual(usage.diskTotalBytes)

    const cap = await hw.capacity()
    expect(cap).toMatchObject({ cpuCores: cpus().length, ramBytes: totalmem(), gpus: [] })
    expect(cap.diskBytes).toBeGreaterThan(0)
  })

  it('reads GPUs from an nvidia-smi and a rocm-smi on PATH, numbering them once, and caches the spec', async () => {
    const calls = join(bin, 'calls.log')
    const dir = await scripts({
      'nvidia-smi': `#!/bin/sh
echo nvidia >> '${calls}'
if [ "$1" = "--query-gpu=index,name,memory.total" ] && [ "$2" = "--format=csv,noheader,nounits" ]; then
  printf '%s' '${NVIDIA_OUT}'
  exit 0
fi
echo "unexpected arguments: $*" >&2
exit 2
`,
      'rocm-smi': `#!/bin/sh
cat <<'JSON'
${ROCM_OUT}
JSON
`
    })
    const hw = createHardwareService({ dataDir: bin, env: envWith(dir) }, { log })
    const spec = await hw.spec()
    expect(spec.gpus).toEqual([
      { index: 0, vendor: 'NVIDIA', model: 'NVIDIA GeForce RTX 3090', vramBytes: 24576 * MiB, vendorIndex: 0 },
      { index: 1, vendor: 'NVIDIA', model: 'NVIDIA A100-SXM4-40GB', vramBytes: 40960 * MiB, vendorIndex: 1 },
      { index: 2, vendor: 'AMD', model: 'Radeon RX 7900 XTX', vramBytes: 25753026560, vendorIndex: 0 }
    ])
    expect(await hw.spec()).toBe(spec)
    expect((await hw.capacity()).gpus.map(g => g.index)).toEqual([0, 1, 2])
    // Static spec: the tool ran once for all those calls.
    expect((await readFile(calls, 'utf8')).trim().split('\n')).toEqual(['nvidia'])
  })

  it('counts no GPUs from a tool that fails or hangs, killing the hung one at the timeout', async () => {
    const pidFile = join(bin, 'rocm-smi.pid')
    const dir = await scripts({
      'nvidia-smi': '#!/bin/sh\necho "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver." >&2\nexit 9\n',
      // hangs for good, as a wedged driver does: only the timeout can end it
      'rocm-smi': `#!/bin/sh\necho $$ > '${pidFile}'\nexec sleep 2147483\n`
    })
    const hw = createHardwareService({ dataDir: bin, env: envWith(dir), gpuTimeoutMs: 300 }, { log })
    expect((await hw.spec()).gpus).toEqual([])
    // The hung tool is gone (killed, not left running), so the detection did not wait for it.
    const pid = Number(await readFile(pidFile, 'utf8'))
    expect(() => process.kill(pid, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }))
  })

  it('skips a vendor tool configured off', async () => {
    const dir = await scripts({ 'nvidia-smi': `#!/bin/sh\nprintf '%s' '${NVIDIA_OUT}'\n` })
    const hw = createHardwareService({ dataDir: bin, env: envWith(dir), gpuCommands: { nvidia: false } }, { log })
    expect((await hw.spec()).gpus).toEqual([])
  })
})
