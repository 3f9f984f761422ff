import { execFileSync } from 'node:child_process'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { qemuArgs } from '../../../src/services/executors/vm.js'
import { S_IFLNK, S_IFREG, findInGuest, listInitramfs, writeCpio } from '../../../src/services/executors/vm/cpio.js'
import { exitStatusOf, jobArchive, panicOf, parseReply, shq } from '../../../src/services/executors/vm/guest.js'
import { gzipSync } from 'node:zlib'

const MiB = 2 ** 20

describe('vm executor: the cpio it writes and reads', () => {
  it('lists what it wrote, names, modes and link targets, plain or gzip\'d, after another archive', () => {
    // path segments as an initramfs has them (no `.` or `..`), never the job's own file
    const name = fc.stringMatching(/^[a-z0-9_-][a-z0-9_.-]{0,11}(\/[a-z0-9_-][a-z0-9_.-]{0,11}){0,2}$/).filter(n => n !== 'dms/main')
    fc.assert(fc.property(fc.uniqueArray(fc.record({ name, exec: fc.boolean(), link: fc.option(name, { nil: undefined }), data: fc.uint8Array({ maxLength: 64 }) }), { selector: f => f.name, maxLength: 8 }), (files) => {
      const archive = writeCpio(files.map(f => f.link !== undefined
        ? { name: f.name, mode: S_IFLNK | 0o777, data: Buffer.from(f.link) }
        : { name: f.name, mode: S_IFREG | (f.exec ? 0o755 : 0o644), data: Buffer.from(f.data) }))
      // as the executor builds a VM's initramfs: the guest's archive, then the job's
      const job = writeCpio([{ name: 'dms/main', mode: S_IFREG | 0o755, data: Buffer.from('exec true\n') }])
      for (const raw of [archive, gzipSync(archive), Buffer.concat([archive, job])]) {
        const listed = listInitramfs(raw)
        expect(listed?.size).toBe(files.length + (raw.length > archive.length && raw[0] !== 0x1f ? 1 : 0))
        for (const f of files) {
          const e = listed?.get(`/${f.name}`)
          if (f.link !== undefined) expect(e).toEqual({ mode: S_IFLNK | 0o777, target: f.link })
          else expect(e).toEqual({ mode: S_IFREG | (f.exec ? 0o755 : 0o644) })
        }
      }
    }))
  })

  it('finds a command as the guest\'s shell would: on PATH, through symlinks, executable only', () => {
    const files = listInitramfs(writeCpio([
      { name: 'bin/busybox', mode: S_IFREG | 0o755, data: Buffer.from('x') },
      { name: 'bin/sh', mode: S_IFLNK | 0o777, data: Buffer.from('busybox') },
      { name: 'usr/bin/env', mode: S_IFLNK | 0o777, data: Buffer.from('../../bin/busybox') },
      { name: 'etc/passwd', mode: S_IFREG | 0o644, data: Buffer.from('root') },
      { name: 'bin/loop', mode: S_IFLNK | 0o777, data: Buffer.from('loop') }
    ]))
    if (files === undefined) throw new Error('the archive did not parse')
    expect(findInGuest(files, 'sh', '/usr/bin:/bin', '/')).toBe('/bin/sh')
    expect(findInGuest(files, 'env', '/usr/bin:/bin', '/')).toBe('/usr/bin/env')
    expect(findInGuest(files, 'sh', '/usr/bin', '/')).toBeUndefined()
    expect(findInGuest(files, '/etc/passwd', '/bin', '/')).toBeUndefined()
    expect(findInGuest(files, '../bin/busybox', '/bin', '/etc')).toBe('/bin/busybox')
    expect(findInGuest(files, 'loop', '/bin', '/')).toBeUndefined()
    expect(listInitramfs(Buffer.from('not an archive at all, long enough for a header'.repeat(4)))).toBeUndefined()
  })
})

describe('vm executor: the guest protocol', () => {
  it('quotes any argument so that the guest\'s shell gives it back unchanged', () => {
    fc.assert(fc.property(fc.array(fc.string({ unit: 'grapheme', maxLength: 20 }).filter(s => !s.includes('\0')), { minLength: 1, maxLength: 4 }), (args) => {
      const out = execFileSync('/bin/sh', ['-c', `printf '%s\\0' ${args.map(shq).join(' ')}`])
      expect(out.toString('utf8').split('\0').slice(0, -1)).toEqual(args)
    }), { numRuns: 40 })
  })

  it('the job archive carries the argv, the environment and the working directory', () => {
    const files = listInitramfs(jobArchive({ argv: ['sh', '-c', "echo 'hi'"], env: { FOO: 'a b' }, workingDir: '/w d' }))
    expect([...(files?.keys() ?? [])].sort()).toEqual(['/dms/envrun', '/dms/main'])
  })

  it('reads the exit line and exec replies, and nothing else', () => {
    expect(exitStatusOf('[ 1.2] boot\r\nDMS-READY\r\nDMS-EXIT 137\r\n')).toBe(137)
    expect(exitStatusOf('DMS-READY\nsome DMS-EXIT 3 in a line\n')).toBeUndefined()
    expect(parseReply(`R 1-2 3 ${Buffer.from('out').toString('base64')} `)).toEqual({ id: '1-2', status: 3, stdout: Buffer.from('out'), stderr: Buffer.alloc(0) })
    expect(parseReply('T')).toBeUndefined()
    expect(panicOf("[ 0.08] Kernel panic - not syncing: IO-APIC + timer doesn't work!  Boot with apic=debug\r\n[ 0.08] CPU: 0")).toBe("IO-APIC + timer doesn't work!  Boot with apic=debug")
    expect(panicOf('DMS-READY\nDMS-EXIT 0\n')).toBeUndefined()
  })

  it('sizes the machine from the limits: vCPUs rounded up, at least the memory the guest needs', () => {
    const args = (cpuCores: number, ramBytes: number): string[] => qemuArgs({ accel: 'tcg', limits: { cpuCores, ramBytes }, kernel: '/k', initrd: '/i', console: '/c', stdout: '/o,1', stderr: '/e', socket: '/s' })
    const after = (a: string[], flag: string): string | undefined => a[a.indexOf(flag) + 1]
    expect(after(args(1.5, 256 * MiB), '-smp')).toBe('2')
    expect(after(args(0, 256 * MiB), '-smp')).toBe('1')
    expect(after(args(1, 256 * MiB), '-m')).toBe('256M')
    expect(after(args(1, 0), '-m')).toBe('128M')
    expect(after(args(1, 10 * MiB), '-m')).toBe('96M')
    // a comma in a path is doubled, as QEMU's option syntax wants
    expect(args(1, 0)).toContain('file,id=out,path=/o,,1,append=on')
    expect(args(1, 0)).toEqual(expect.arrayContaining(['-no-reboot', '-nodefaults']))
    // the caller's boot arguments after the executor's; a root disk read-only, its commas doubled
    const own = qemuArgs({ accel: 'tcg', limits: { cpuCores: 1, ramBytes: 0 }, kernel: '/k', initrd: '/i', rootfs: '/r,1.img', bootArgs: 'loglevel=7', console: '/c', stdout: '/o', stderr: '/e', socket: '/s' })
    expect(after(own, '-append')).toMatch(/^console=ttyS0 .* loglevel=7$/)
    expect(after(own, '-drive')).toBe('file=/r,,1.img,format=raw,if=virtio,readonly=on')
    expect(args(1, 0)).not.toContain('-drive')
  })
})
