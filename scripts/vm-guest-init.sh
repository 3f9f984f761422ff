#!/bin/sh
# /init of the dms test guest (PID 1 of a VM of the vm executor), run by busybox sh. Built into
# the initramfs by scripts/vm-setup.sh; the protocol is specified in specs/allocations.md (VM
# executor) and spoken by src/services/executors/vm.ts. In short:
#   ttyS0  console: the kernel's few lines, then `DMS-READY` once the agent listens and
#          `DMS-EXIT <status>` once the workload ended (QEMU appends it to a file on the host);
#   ttyS1  the workload's stdout, ttyS2 its stderr (QEMU appends them to the allocation's logs);
#   ttyS3  the control channel (a unix socket on the host): one line per request, `T` (SIGTERM
#          to the workload's group), `K` (SIGKILL to it), `X <id> <base64 script>` (exec: runs
#          the script with the workload's environment and directory, answers
#          `R <id> <status> <base64 stdout> <base64 stderr>`).
# The job (/dms/main, /dms/envrun) comes as a second cpio archive the executor appends to this
# initramfs for each VM; the kernel unpacks both.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /tmp /dev/pts
chmod 1777 /tmp
# Raw: no echo of the requests back to the host, no \n -> \r\n in the workload's logs, and no
# 4 KiB line limit on requests.
for t in ttyS1 ttyS2 ttyS3; do stty -F /dev/$t raw -echo; done
exec 3>/dev/ttyS1 4>/dev/ttyS2 5<>/dev/ttyS3
if [ ! -f /dms/main ]; then
  echo "DMS-EXIT 126"
  stty -F /dev/ttyS0 raw
  poweroff -f
fi
# setsid: the workload leads its own session and group (a background job of a non-interactive
# shell is no group leader, so busybox setsid execs in place: $! is the workload itself).
setsid sh /dms/main <&- >&3 2>&4 5>&- &
job=$!

# Exec requests: each runs in a replier (a subshell) with its files in /tmp/.x/<id>/: the script,
# its output, and the pid of its command, which leads a session of its own (setsid in place: a
# background job of a non-interactive shell is no group leader), so that the workload's end can
# kill it without killing the replier. A replier answers once its command ended, whatever ended
# it, and writes its reply whole under a lock (mkdir is atomic): two replies never interleave.
mkdir -p /tmp/.x
reply () {
  n=0
  until mkdir /tmp/.reply-lock 2>/dev/null; do n=$((n+1)); [ $n -gt 500 ] && break; usleep 10000; done
  cat "$1" >&5
  rmdir /tmp/.reply-lock 2>/dev/null
}
run_exec () {
  d=/tmp/.x/$1
  # ids are random per request: one in use is a host's mistake, answered rather than dropped
  mkdir "$d" 2>/dev/null || { printf 'R %s 126  %s\n' "$1" "$(echo "exec id $1 in use" | base64 -w 0)" >/tmp/.x-dup-$1; reply /tmp/.x-dup-$1; rm -f /tmp/.x-dup-$1; return; }
  echo "$2" | base64 -d >"$d/script"
  setsid sh "$d/script" </dev/null >"$d/out" 2>"$d/err" 5>&- &
  echo $! >"$d/pid"
  wait $!
  s=$?
  printf 'R %s %s %s %s\n' "$1" "$s" "$(base64 -w 0 "$d/out")" "$(base64 -w 0 "$d/err")" >"$d/reply"
  reply "$d/reply"
  rm -rf "$d"
}
agent () {
  while read -r op id script <&5; do
    case "$op" in
      T) kill -TERM -"$job" 2>/dev/null ;;
      K) kill -KILL -"$job" 2>/dev/null ;;
      X) case "$id" in ''|*[!A-Za-z0-9_-]*) ;; *) run_exec "$id" "$script" 3>&- 4>&- & ;; esac ;;
    esac
  done
}
agent 3>&- 4>&- &
agent_pid=$!
echo "DMS-READY"

wait "$job"
status=$?
# The workload ended. The agent takes no more requests; execs still running are ended (their
# sessions), and their repliers answer before the guest powers off: an exec that itself ended
# the workload (`touch go` for a loop that waits for it) gets its reply, not a closed channel.
# Bounded (30 s of guest time): a replier that cannot write is killed below with the rest.
kill -KILL "$agent_pid" 2>/dev/null
kill -KILL -"$job" 2>/dev/null
n=0
while [ $n -lt 3000 ]; do
  set -- /tmp/.x/*
  [ -e "$1" ] || break
  for d in "$@"; do [ -s "$d/pid" ] && kill -KILL -"$(cat "$d/pid")" 2>/dev/null; done
  usleep 10000
  n=$((n+1))
done
# Nothing the workload started outlives it (as in a container whose first process ended).
kill -KILL -1 2>/dev/null
# stty sets modes with TCSADRAIN: it returns once every byte written so far left the port, so
# the workload's last lines and the last exec replies are on the host before the power goes.
stty -F /dev/ttyS1 raw
stty -F /dev/ttyS2 raw
stty -F /dev/ttyS3 raw -echo
echo "DMS-EXIT $status"
stty -F /dev/ttyS0 raw
poweroff -f
