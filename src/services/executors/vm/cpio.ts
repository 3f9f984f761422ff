import { gunzipSync } from 'node:zlib'

/**
 * The cpio "newc" format (what the Linux kernel unpacks as an initramfs): a 110-byte ASCII
 * header of 13 hex fields, the name (NUL-terminated, padded to 4 bytes with the header), the data
 * (padded to 4 bytes); `TRAILER!!!` ends an archive. The kernel unpacks several archives one
 * after the other, compressed or not, which is how the vm executor adds a VM's job to the shared
 * guest initramfs without rebuilding it.
 */
const MAGIC = '070701'
const HEADER_BYTES = 110
const TRAILER = 'TRAILER!!!'
/** File type bits of `mode` (`S_IFMT`), and the two types the executor cares about. */
const S_IFMT = 0o170000
export const S_IFREG = 0o100000
export const S_IFLNK = 0o120000

export interface CpioFile { name: string, mode: number, data: Buffer }

const pad4 = (n: number): number => (4 - (n % 4)) % 4
const hex8 = (n: number): string => n.toString(16).padStart(8, '0')

/** An uncompressed newc archive of `files` (owned by root, one link each), trailer included. */
export function writeCpio (files: CpioFile[]): Buffer {
  const parts: Buffer[] = []
  let ino = 1
  const entry = (name: string, mode: number, data: Buffer): void => {
    const nameBytes = Buffer.from(`${name}\0`)
    const header = MAGIC + [ino++, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, nameBytes.length, 0].map(hex8).join('')
    parts.push(Buffer.from(header, 'ascii'), nameBytes, Buffer.alloc(pad4(HEADER_BYTES + nameBytes.length)), data, Buffer.alloc(pad4(data.length)))
  }
  for (const f of files) entry(f.name, f.mode, f.data)
  entry(TRAILER, 0, Buffer.alloc(0))
  return Buffer.concat(parts)
}

export interface CpioEntry { mode: number, target?: string }

/**
 * The files of an initramfs (gzip'd or plain newc, one archive or several): path (without the
 * leading `./`) → mode, and a symlink's target. Undefined when it is not in a format read here;
 * the caller then does without the listing.
 */
export function listInitramfs (raw: Buffer): Map<string, CpioEntry> | undefined {
  let buf: Buffer
  try {
    buf = raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw) : raw
  } catch {
    return undefined
  }
  const out = new Map<string, CpioEntry>()
  let at = 0
  // Bounded by the buffer: every entry moves `at` forward by at least a header.
  while (at + HEADER_BYTES <= buf.length) {
    if (buf[at] === 0) { at++; continue }
    if (buf.toString('ascii', at, at + 6) !== MAGIC) return out.size > 0 ? out : undefined
    const field = (i: number): number => parseInt(buf.toString('ascii', at + 6 + i * 8, at + 14 + i * 8), 16)
    const mode = field(1)
    const size = field(6)
    const nameSize = field(11)
    const nameAt = at + HEADER_BYTES
    const name = buf.toString('utf8', nameAt, nameAt + nameSize - 1)
    const dataAt = nameAt + nameSize + pad4(HEADER_BYTES + nameSize)
    at = dataAt + size + pad4(size)
    if (name === TRAILER) continue
    // `./bin/sh`, `bin/sh` and `/bin/sh` name one file; `.` is the root itself.
    const path = `/${name === '.' ? '' : name.replace(/^(\.\/)+/, '').replace(/^\/+/, '')}`
    out.set(path, (mode & S_IFMT) === S_IFLNK ? { mode, target: buf.toString('utf8', dataAt, dataAt + size) } : { mode })
  }
  return out
}

/** Where `cmd` is found in the guest, the way its shell finds it: on PATH, or at its path. */
export function findInGuest (files: Map<string, CpioEntry>, cmd: string, searchPath: string, cwd: string): string | undefined {
  const candidates = cmd.includes('/')
    ? [resolvePath(cwd, cmd)]
    : searchPath.split(':').map(d => resolvePath(cwd, `${d === '' ? '.' : d}/${cmd}`))
  for (const c of candidates) if (isExecutable(files, c)) return c
  return undefined
}

function isExecutable (files: Map<string, CpioEntry>, path: string): boolean {
  let p = path
  // Symlinks followed a few hops at most (busybox applets are one hop from /bin/busybox).
  for (let hops = 0; hops < 8; hops++) {
    const e = files.get(p)
    if (e === undefined) return false
    if (e.target !== undefined) {
      p = resolvePath(p.slice(0, p.lastIndexOf('/')) || '/', e.target)
      continue
    }
    return (e.mode & S_IFMT) === S_IFREG && (e.mode & 0o111) !== 0
  }
  return false
}

function resolvePath (cwd: string, p: string): string {
  const parts: string[] = []
  for (const seg of (p.startsWith('/') ? p : `${cwd}/${p}`).split('/')) {
    if (seg === '' || seg === '.') continue
    if (seg === '..') parts.pop()
    else parts.push(seg)
  }
  return `/${parts.join('/')}`
}
