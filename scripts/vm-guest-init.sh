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

# Replies to exec requests are written whole under a lock (mkdir is atomic), so that two execs
# answering at once never interleave their lines.
reply () {
  n=0
  until mkdir /tmp/.reply-lock 2>/dev/null; do n=$((n+1)); [ $n -gt 500 ] && break; usleep 10000; done
  cat "$1" >&5
  rmdir /tmp/.reply-lock 2>/dev/null
  rm -f "$1"
}
agent () {
  while read -r op id script <&5; do
    case "$op" in
      T) kill -TERM -"$job" 2>/dev/null ;;
      K) kill -KILL -"$job" 2>/dev/null ;;
      X) (
          echo "$script" | base64 -d >/tmp/.x$id
          sh /tmp/.x$id </dev/null >/tmp/.o$id 2>/tmp/.e$id
          s=$?
          printf 'R %s %s %s %s\n' "$id" "$s" "$(base64 -w 0 /tmp/.o$id)" "$(base64 -w 0 /tmp/.e$id)" >/tmp/.r$id
          rm -f /tmp/.x$id /tmp/.o$id /tmp/.e$id
          reply /tmp/.r$id
        ) 3>&- 4>&- & ;;
    esac
  done
}
agent 3>&- 4>&- &
echo "DMS-READY"

wait "$job"
status=$?
# Nothing the workload started outlives it (as in a container whose first process ended).
kill -KILL -1 2>/dev/null
# stty sets modes with TCSADRAIN: it returns once every byte written so far left the port, so
# the workload's last lines are on the host before the power goes.
stty -F /dev/ttyS1 raw
stty -F /dev/ttyS2 raw
echo "DMS-EXIT $status"
stty -F /dev/ttyS0 raw
poweroff -f
