/**
 * The tiny `/bin/sh` program every process workload runs under (its group leader). It:
 * 1. joins the workload's control groups (writes its pid into each `cgroup.procs`) before the
 *    workload runs, so no instruction of the workload escapes its limits or its accounting;
 * 2. applies RLIMIT_AS (`ulimit -v`) where no cgroup limits memory;
 * 3. runs the workload as its child (argv exactly as given, looked up on the spec's PATH);
 * 4. records the workload's exit status in the exit file: a daemon restarted after `kill -9`
 *    learns the exit code of a workload it did not spawn from there;
 * 5. then kills what is left of its process group, itself included (`kill -9 0`): nothing the
 *    workload started outlives it, as in a container whose first process ended.
 *
 * `trap : TERM` keeps the wrapper alive through a stop's SIGTERM (sent to the whole group): it
 * waits for the workload to end its own way, then records the status; a trapped signal is
 * reset to its default in the workload, which therefore sees SIGTERM normally. SIGKILL after the
 * grace ends the wrapper too: then no status is recorded, and the stopper knows why.
 *
 * The shell exports `PWD` as it starts; unless the spec's environment had one, it is unset again
 * before the workload runs, whose environment is then exactly the spec's.
 *
 * Arguments: `$0` = WRAPPER_NAME (so `list()` can find wrappers by their command line),
 * `$1` = exit file, `$2` = KiB for `ulimit -v` or `-`, `$3` = `P` to keep PWD or `-`, then
 * cgroup.procs files, `--`, argv.
 * 126 is what a shell answers when it cannot run a command: a group that cannot be joined means
 * the workload never ran.
 */
export const WRAPPER_SCRIPT = [
  'x=$1; v=$2; p=$3; shift 3',
  'while [ "$#" -gt 0 ] && [ "$1" != -- ]; do echo $$ > "$1" || { echo 126 > "$x"; exit 126; }; shift; done; shift',
  '[ "$v" = - ] || ulimit -v "$v" || { echo 126 > "$x"; exit 126; }',
  '[ "$p" = P ] || unset PWD',
  'trap : TERM',
  '"$@"',
  's=$?',
  'echo "$s" > "$x"',
  'kill -9 0'
].join('\n')

/** `$0` of every wrapper: with the node's state dir in `$1`, it names this node's workloads in /proc. */
export const WRAPPER_NAME = 'dms-workload'

/**
 * What `exec` runs a command under: it joins the workload's groups (its CPU and memory count
 * against the workload's limits), then replaces itself with the command.
 */
export const EXEC_SCRIPT = [
  'while [ "$#" -gt 0 ] && [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift',
  'exec "$@"'
].join('\n')

export const EXEC_NAME = 'dms-exec'

export function wrapperArgs (o: { exitPath: string, asKiB?: number, keepPwd: boolean, procs: string[], argv: string[] }): string[] {
  return ['-c', WRAPPER_SCRIPT, WRAPPER_NAME, o.exitPath, o.asKiB === undefined ? '-' : String(o.asKiB), o.keepPwd ? 'P' : '-', ...o.procs, '--', ...o.argv]
}

export function execArgs (o: { procs: string[], argv: string[] }): string[] {
  return ['-c', EXEC_SCRIPT, EXEC_NAME, ...o.procs, '--', ...o.argv]
}

/**
 * What the exit file holds: the status `$?` of the workload as the shell saw it. 128 + n means
 * "ended by signal n" (the shell's and Docker's convention; a program that itself exits with
 * 129–192 reads the same). Undefined when the file is absent, partial or damaged.
 */
export function parseExitFile (text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  const m = /^(\d{1,3})\n$/.exec(text)
  return m === null ? undefined : Number(m[1])
}
