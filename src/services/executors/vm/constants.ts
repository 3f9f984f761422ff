/**
 * The vm executor's numbers, each with its reason.
 */

/**
 * The guest needs this much to boot Debian's kernel and unpack the initramfs. Tried here: 96 MiB
 * boots (in 1.7 s under TCG), 80 MiB panics out of memory, 64 MiB does not even start the ELF
 * kernel. A spec asking less gets this much: the VM then holds up to 96 MiB whatever the
 * reservation said (the CLI asks 128 MiB for a VM by default).
 */
export const MIN_RAM_BYTES = 96 * 2 ** 20
/** A spec with no memory limit (0) gets this much: the kernel and busybox use ~40 MiB of it. */
export const DEFAULT_RAM_BYTES = 128 * 2 ** 20
/**
 * The guest's kernel command line, kept short: the console on the first serial port, `quiet` (every
 * line of kernel output costs emulated UART writes under TCG), no reboot on a panic but an exit
 * (`panic=-1` reboots at once, `-no-reboot` turns that into QEMU's exit; `reboot=t` is a triple
 * fault, which needs no ACPI), `8250.nr_uarts=4` for the four ports of the protocol, no time
 * spent probing a PS/2 keyboard and mouse that do not exist (`i8042.*`), and `no_timer_check`:
 * an emulated CPU on a loaded host is slow against real time, and the kernel's check of the
 * IO-APIC timer then fails and panics ("IO-APIC + timer doesn't work!": seen here, 1 boot in 24 at
 * load average 11).
 */
export const KERNEL_CMDLINE = 'console=ttyS0 quiet panic=-1 reboot=t 8250.nr_uarts=4 i8042.noaux i8042.nomux i8042.nopnp i8042.nokbd no_timer_check'
/**
 * Kernel parameters a spec's `bootArgs` may not give, because the guest protocol depends on the
 * executor's values: `console` (the DMS-READY and DMS-EXIT lines are read from ttyS0: another
 * console moves them), `earlycon` / `earlyprintk` (kernel output on a port that may be the
 * workload's stdout), `8250.nr_uarts` (the protocol's four ports), `panic` and `reboot` (a panic
 * must end QEMU, not hang or reboot the guest), `init` and `rdinit` (the guest's /init speaks the
 * protocol: another init never reports an exit). The kernel takes the last value of a repeated
 * parameter, so appending them would override. Everything else (`quiet` → `loglevel=7`, the
 * `i8042.*` speed-ups, `no_timer_check`'s peers) the caller may add.
 */
export const PROTOCOL_BOOT_PARAMS: readonly string[] = ['console', 'earlycon', 'earlyprintk', '8250.nr_uarts', 'panic', 'reboot', 'init', 'rdinit']
/** `bootArgs` at most this long: the x86 kernel's command line holds 2048 bytes, the executor's own use ~140. */
export const BOOT_ARGS_MAX_LENGTH = 1024
/** How often a VM this process did not start is checked for its end (one /proc read per check). */
export const ADOPTED_POLL_MS = 200
/** After `K` (SIGKILL in the guest), how long stop waits for the guest to power off before it kills QEMU. */
export const KILL_WAIT_MS = 5_000
/** QEMU's firmware writes to the console once the machine and kernel are loaded (~0.1 s): start waits this long for it. */
export const SPAWN_WAIT_MS = 10_000
/** Checks for the control socket, the console's ready line or a VM's end back off up to this period. */
export const POLL_MAX_MS = 100
/** Checks (POLL_MAX_MS / 4 apart: 1 s in all) for an ended QEMU to leave its cgroup before the group is removed. */
export const GROUP_EMPTY_CHECKS = 40
/** exec's output kept per stream (as the process executor). */
export const EXEC_OUTPUT_MAX_BYTES = 64 * 1024
/** Unix socket paths are limited to 107 bytes: the control sockets go in a short directory of their own. */
export const SOCKET_DIR = '/tmp/dms-vm'
/** The default working directory in the guest (root's home in its /etc/passwd). */
export const DEFAULT_WORKING_DIR = '/root'
/** The PATH a command is looked up on in the guest when the spec sets none (busybox sh's default). */
export const GUEST_PATH = '/usr/sbin:/usr/bin:/sbin:/bin'
/**
 * TCG's translated-code cache, MiB. QEMU's default is sized for big guests and part of it shows up
 * in each VM's resident memory: a 128 MiB guest's QEMU held 193–195 MiB with the default and
 * 180.5 MiB with 32 (npm run bench:vm, twice each, interleaved), booting no slower.
 */
export const TCG_TB_SIZE_MIB = 32
