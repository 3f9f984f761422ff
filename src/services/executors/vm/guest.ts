import { S_IFREG, writeCpio } from './cpio.js'

/**
 * What the vm executor says to its test guest (`scripts/vm-guest-init.sh`, the guest's /init),
 * and how it reads what the guest says. The protocol, in full:
 *
 * - **The job** is a second cpio archive appended to the guest's initramfs for each VM (the
 *   kernel unpacks both): `/dms/envrun` enters the working directory (made if missing) and
 *   replaces itself with `env -i <the spec's variables> "$@"`, so the workload and every exec
 *   see exactly the spec's environment; `/dms/main` runs the spec's argv through it. Nothing goes
 *   on the kernel command line (2 KiB at most, and its quoting is the kernel's own).
 * - **Serial ports** (QEMU's 8250s, built into every kernel): ttyS0 is the console, appended to
 *   `<state>/<vm>.console` on the host; ttyS1 and ttyS2 are the workload's stdout and stderr,
 *   appended by QEMU itself to the allocation's log files (a VM keeps logging while the daemon
 *   is down); ttyS3 is the control channel, a unix socket on the host.
 * - **Console lines** from /init: `DMS-READY` once the workload runs and the agent listens;
 *   `DMS-EXIT <status>` once the workload ended (the shell's `$?`: 128 + n for signal n), after
 *   its output drained; then the guest powers off and QEMU exits (`-no-reboot`).
 * - **Control requests**, one line each: `T` (SIGTERM to the workload's process group), `K`
 *   (SIGKILL to it), `X <id> <base64 of a shell script>` (exec), answered by
 *   `R <id> <status> <base64 stdout> <base64 stderr>`.
 */
export const READY_LINE = 'DMS-READY'
const EXIT_RE = /^DMS-EXIT (\d{1,3})\r?$/m

/** POSIX shell single-quoting: the one quoting that needs no escapes inside. */
export const shq = (s: string): string => `'${s.replaceAll("'", "'\\''")}'`

export function jobArchive (o: { argv: string[], env: Record<string, string>, workingDir: string }): Buffer {
  const wd = shq(o.workingDir)
  const envrun = [
    `cd ${wd} 2>/dev/null || { mkdir -p ${wd} && cd ${wd}; } || exit 126`,
    `exec env -i ${Object.entries(o.env).map(([k, v]) => shq(`${k}=${v}`)).join(' ')} "$@"`
  ].join('\n') + '\n'
  const main = `exec sh /dms/envrun ${o.argv.map(shq).join(' ')}\n`
  return writeCpio([
    { name: 'dms/envrun', mode: S_IFREG | 0o755, data: Buffer.from(envrun) },
    { name: 'dms/main', mode: S_IFREG | 0o755, data: Buffer.from(main) }
  ])
}

/** The script an exec request carries: the argv run as the workload is (its env and directory). */
export const execScript = (argv: string[]): string => `exec sh /dms/envrun ${argv.map(shq).join(' ')}\n`

/** The workload's exit status as /init reported it on the console, if it did. */
export function exitStatusOf (console: string): number | undefined {
  const m = EXIT_RE.exec(console)
  return m === null ? undefined : Number(m[1])
}

export const isReady = (console: string): boolean => console.includes(READY_LINE)

/** The guest kernel's panic message, when the console shows one (the VM then ends with no exit line). */
export function panicOf (console: string): string | undefined {
  const m = /Kernel panic - not syncing: ([^\r\n]*)/.exec(console)
  return m === null ? undefined : m[1].trim().slice(0, 200)
}

export interface ExecReply { id: string, status: number, stdout: Buffer, stderr: Buffer }

/** One `R …` line of the control channel. */
export function parseReply (line: string): ExecReply | undefined {
  const m = /^R (\S+) (\d+) ([A-Za-z0-9+/=]*) ([A-Za-z0-9+/=]*)\r?$/.exec(line)
  if (m === null) return undefined
  return { id: m[1], status: Number(m[2]), stdout: Buffer.from(m[3], 'base64'), stderr: Buffer.from(m[4], 'base64') }
}
