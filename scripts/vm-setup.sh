#!/usr/bin/env bash
# Sets up what the vm executor's tests and benchmark need on a machine of this kind: QEMU, a
# kernel (extracted from Debian's package, not installed: the machine's own boot is left alone)
# and the test guest, an initramfs of busybox-static whose /init (scripts/vm-guest-init.sh) runs
# the workload the executor appends to it. Idempotent: a second run reuses the packages, the
# kernel, the initramfs (rebuilt only when the init script or busybox changed) and the KVM probe.
#
#   eval "$(bash scripts/vm-setup.sh)"     # exports DMS_VM_KERNEL, DMS_VM_INITRD, DMS_VM_ACCEL
#
# stdout carries only `export NAME=value` lines; progress goes to stderr. Needs root (apt-get).
# Everything lives in DMS_VM_DIR (default /var/lib/dms-vm).
set -euo pipefail
cd "$(dirname "$0")"

DIR="${DMS_VM_DIR:-/var/lib/dms-vm}"
# A probe guest that has not printed its line within this long did not boot (TCG boots it in
# ~8 s here; KVM, where it works, in well under one).
KVM_PROBE_SECONDS=20

log () { printf 'vm-setup: %s\n' "$*" >&2; }
die () { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (apt-get); run it with sudo, as CI does as root"

# ---- packages -----------------------------------------------------------------------------------
# qemu-system-x86 for qemu-system-x86_64 (its recommends, e.g. the GUI and ipxe ROMs, are not
# needed: the VMs run with -nodefaults and no NIC); cpio to pack the initramfs; busybox-static
# is the whole guest userland; xz to unpack the kernel (below).
missing=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
command -v cpio >/dev/null 2>&1 || missing+=(cpio)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
command -v xz >/dev/null 2>&1 || missing+=(xz-utils)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

mkdir -p "$DIR"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"   # apt-get download as root hands the fetch to _apt, which must write here

# ---- kernel -------------------------------------------------------------------------------------
# linux-image-amd64 is a metapackage: the image is the package it depends on. Only ./boot of it
# is extracted (dpkg-deb's file tree, filtered): the modules (~400 MB) are not needed, since the
# guest uses only what is built in (8250 serial ports, initramfs, ACPI power-off).
if [ ! -s "$DIR/vmlinuz" ]; then
  log "fetching the kernel package"
  (cd "$work" && apt-get download linux-image-amd64 >&2) || { apt-get update -qq >&2; (cd "$work" && apt-get download linux-image-amd64 >&2); }
  image="$(dpkg-deb -f "$work"/linux-image-amd64_*.deb Depends | tr ',' '\n' | grep -o 'linux-image-[^ ]*-amd64' | grep -v unsigned | head -1)"
  [ -n "$image" ] || die "cannot tell which image package linux-image-amd64 depends on"
  (cd "$work" && apt-get download "$image" >&2)
  mkdir -p "$work/kernel"
  dpkg-deb --fsys-tarfile "$work"/"$image"_*.deb | tar -x -C "$work/kernel" --wildcards './boot/vmlinuz-*'
  cp "$work"/kernel/boot/vmlinuz-* "$DIR/vmlinuz.new"
  mv "$DIR/vmlinuz.new" "$DIR/vmlinuz"
  echo "$image" >"$DIR/vmlinuz.package"
  log "kernel from $image"
else
  log "kernel present ($(cat "$DIR/vmlinuz.package" 2>/dev/null || echo unknown))"
fi
# The kernel as an ELF file (vmlinux), unpacked from the bzImage's xz payload: QEMU boots an ELF
# kernel through its PVH entry point, with no decompression in the guest, which under TCG is
# most of the time before the kernel runs (a probe guest: 4.8 s from the bzImage, 3.2 s from the
# ELF). xz stops at the payload's end and complains of what follows; the ELF magic is checked.
if [ ! -s "$DIR/vmlinux" ] || [ "$DIR/vmlinuz" -nt "$DIR/vmlinux" ]; then
  off="$(LC_ALL=C grep -abo "$(printf '\3757zXZ')" "$DIR/vmlinuz" | head -1 | cut -d: -f1 || true)"
  [ -n "$off" ] || die "no xz payload in $DIR/vmlinuz: cannot unpack it to an ELF kernel"
  tail -c +"$((off + 1))" "$DIR/vmlinuz" | xz -dc 2>/dev/null >"$DIR/vmlinux.new" || true
  [ "$(head -c 4 "$DIR/vmlinux.new" | od -An -c | tr -d ' ')" = '177ELF' ] || die "the xz payload of $DIR/vmlinuz is not an ELF kernel"
  mv "$DIR/vmlinux.new" "$DIR/vmlinux"
  log "unpacked the ELF kernel ($(stat -c %s "$DIR/vmlinux") bytes)"
fi

# ---- the test guest: an initramfs of busybox-static -----------------------------------------------
# Rebuilt when its inputs change: the init script and the busybox binary.
stamp="$(cat vm-guest-init.sh /bin/busybox | sha256sum | cut -c1-16)"
if [ -s "$DIR/initrd.cpio" ] && [ "$(cat "$DIR/initrd.stamp" 2>/dev/null)" = "$stamp" ]; then
  log "initramfs present ($stamp)"
else
  root="$work/rootfs"
  mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/root" "$root/dms"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  install -m 0755 vm-guest-init.sh "$root/init"
  # The console device must exist before devtmpfs is mounted: the kernel opens it for /init.
  mknod -m 600 "$root/dev/console" c 5 1
  # Not compressed: 2 MB copied per VM costs less than gunzip in an emulated guest (2.9 s against 3.2 s).
  (cd "$root" && find . -print0 | sort -z | cpio --null -o -H newc --quiet -R 0:0) >"$DIR/initrd.cpio.new"
  mv "$DIR/initrd.cpio.new" "$DIR/initrd.cpio"
  rm -f "$DIR/initrd.gz"   # the compressed guest of earlier versions of this script
  echo "$stamp" >"$DIR/initrd.stamp"
  rm -f "$DIR/accel"   # a new guest is probed again
  log "built the initramfs ($(stat -c %s "$DIR/initrd.cpio") bytes, $(/bin/busybox --list | wc -l) applets)"
fi

# ---- acceleration -------------------------------------------------------------------------------
# KVM only when a probe guest boots under it: /dev/kvm may open and still run no guest (nested
# KVM on these machines prints nothing in 100 s). The answer is kept per boot of the host.
boot_id="$(cat /proc/sys/kernel/random/boot_id)"
if [ -s "$DIR/accel" ] && [ "$(sed -n 2p "$DIR/accel")" = "$boot_id" ]; then
  accel="$(sed -n 1p "$DIR/accel")"
  log "acceleration: $accel (probed earlier in this boot)"
else
  accel=tcg
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    log "probing KVM with a guest (at most ${KVM_PROBE_SECONDS} s)"
    # No job: the guest's /init reports DMS-EXIT 126 at once, which is all the probe asks for.
    if timeout "$KVM_PROBE_SECONDS" qemu-system-x86_64 -M pc -accel kvm -nodefaults -no-user-config -nographic -no-reboot \
        -m 128 -kernel "$DIR/vmlinux" -initrd "$DIR/initrd.cpio" -append 'console=ttyS0 quiet panic=-1 reboot=t no_timer_check' \
        -serial stdio 2>/dev/null </dev/null | grep -q 'DMS-EXIT'; then
      accel=kvm
    fi
  fi
  printf '%s\n%s\n' "$accel" "$boot_id" >"$DIR/accel"
  log "acceleration: $accel"
fi

echo "export DMS_VM_KERNEL=$DIR/vmlinux"
echo "export DMS_VM_INITRD=$DIR/initrd.cpio"
echo "export DMS_VM_ACCEL=$accel"
