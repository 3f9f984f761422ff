#!/usr/bin/env bash
# Sets up a Docker Engine API for the docker executor's tests and benchmark on a machine with no
# Docker engine: Debian's podman serving the Docker-compatible API on a unix socket, with a
# busybox image built offline (no image registry is reachable). Idempotent: a second run reuses
# the installed packages, the running service and the image, and only checks them.
#
#   eval "$(bash scripts/podman-setup.sh)"     # exports DOCKER_HOST (and the podman CLI's config)
#
# stdout carries only `export NAME=value` lines; progress goes to stderr. Needs root (CI runs as
# root; rootless podman would need subuid ranges and user namespaces this machine kind lacks).
#
# Everything lives in one directory of its own (DMS_PODMAN_DIR, default /var/lib/dms-podman) and
# reaches podman through CONTAINERS_CONF and CONTAINERS_STORAGE_CONF, so the machine's global
# container configuration and storage (/etc/containers, /var/lib/containers) are left as they are.
set -euo pipefail

DIR="${DMS_PODMAN_DIR:-/var/lib/dms-podman}"
IMAGE="${DMS_PODMAN_IMAGE:-localhost/dms-busybox:latest}"
NGINX_IMAGE="${DMS_PODMAN_NGINX_IMAGE:-localhost/dms-nginx-standin:latest}"
SOCK="$DIR/docker.sock"
# Upper bound on the wait for the service's /_ping after starting it (it answers in ~1 s here).
PING_TRIES=150 # × 0.1 s = 15 s

log () { printf 'podman-setup: %s\n' "$*" >&2; }
die () { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (rootful podman); run it with sudo, as CI does as root"

# ---- packages -----------------------------------------------------------------------------------
# What rootful podman needs here, found by installing with --no-install-recommends and running
# containers: podman pulls in conmon, iptables and containernetworking-plugins (the CNI bridge and
# portmap plugins that publish ports) itself. runc because crun refuses this machine's cgroup v1
# layout. busybox-static for the image. Not needed as root: uidmap, slirp4netns/passt (rootless
# networking), fuse-overlayfs (the kernel's overlayfs works on ext4 as root), netavark (CNI is
# podman 4.3's default backend when netavark is absent). catatonit is the init the docker
# executor runs as PID 1 (`HostConfig.Init`), a podman recommend that --no-install-recommends
# leaves out. curl talks to the socket below.
missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v catatonit >/dev/null 2>&1 || missing+=(catatonit)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# ---- configuration ------------------------------------------------------------------------------
mkdir -p "$DIR"
chmod 0711 "$DIR"
# Podman's run state (runroot, tmp_dir) must not outlive a boot, or it takes containers of the last
# boot for running. /run is a plain directory on this machine kind, not a tmpfs, so the state
# lives in $DIR/run and is dropped when the boot id changes.
boot_id="$(cat /proc/sys/kernel/random/boot_id)"
if [ -d "$DIR/run" ] && [ "$(cat "$DIR/run/boot_id" 2>/dev/null)" != "$boot_id" ]; then
  log "new boot: dropping the run state of the last one"
  rm -rf "$DIR/run" "$DIR/service.pid" "$SOCK"
fi
mkdir -p "$DIR/run"
echo "$boot_id" >"$DIR/run/boot_id"
# TESTING.md's recipe. runc: crun refuses the cgroup layout. cgroupfs: no systemd manages cgroups
# here. file events logger: no journald. Lowered default ulimits: podman's default (the host's
# hard limit, 1M+ files) makes some runtimes and busybox tools slow or refuse. pull_policy never:
# nothing may be pulled (no registry is reachable, and a pull attempt would only hang).
cat >"$DIR/containers.conf.new" <<EOF
# Written by dms scripts/podman-setup.sh; used through CONTAINERS_CONF only.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$DIR/events.log"
pull_policy = "never"
init_path = "/usr/bin/catatonit"
tmp_dir = "$DIR/run/libpod"
static_dir = "$DIR/storage/libpod"
volume_path = "$DIR/storage/volumes"

[network]
network_config_dir = "$DIR/cni"
EOF
cat >"$DIR/storage.conf.new" <<EOF
# Written by dms scripts/podman-setup.sh; used through CONTAINERS_STORAGE_CONF only.
[storage]
driver = "overlay"
graphroot = "$DIR/storage"
runroot = "$DIR/run/storage"
EOF
changed=0
for f in containers.conf storage.conf; do
  if cmp -s "$DIR/$f.new" "$DIR/$f"; then rm "$DIR/$f.new"; else mv "$DIR/$f.new" "$DIR/$f"; changed=1; fi
done
mkdir -p "$DIR/cni"
export CONTAINERS_CONF="$DIR/containers.conf"
export CONTAINERS_STORAGE_CONF="$DIR/storage.conf"

# ---- the API service ----------------------------------------------------------------------------
ping () { curl -fsS --max-time 2 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; }

pid=""
[ -f "$DIR/service.pid" ] && pid="$(cat "$DIR/service.pid")"
alive () { [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q podman "/proc/$pid/cmdline" 2>/dev/null; }

if [ "$changed" = 1 ] && alive; then
  log "configuration changed: restarting the service (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do alive || break; sleep 0.1; done
  alive && kill -9 "$pid" 2>/dev/null || true
fi

if alive && ping; then
  log "reusing the service (pid $pid) on $SOCK"
else
  if alive; then
    log "service pid $pid does not answer: restarting it"
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$SOCK"
  # setsid: its own session, so it outlives this script and the caller's process group (CI's
  # test run, a developer's shell); --time=0: it never exits for being idle.
  setsid podman system service --time=0 "unix://$SOCK" </dev/null >>"$DIR/service.log" 2>&1 &
  pid=$!
  echo "$pid" >"$DIR/service.pid"
  ok=0
  for _ in $(seq "$PING_TRIES"); do
    if ping; then ok=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ "$ok" = 1 ] || { tail -20 "$DIR/service.log" >&2; die "podman system service did not answer /_ping on $SOCK"; }
  log "started the service (pid $pid) on $SOCK"
fi

# ---- the images, built offline ------------------------------------------------------------------
# A rootfs of Debian's static busybox with a link per applet, imported as an image. /tmp, /proc,
# /sys, /dev exist as mount points; /etc/passwd and /etc/group name root and nobody so `id` and
# `whoami` answer.
#
# A second image stands in for `nginxdemos/hello:plain-text`, which DMS's own ensemble files run
# (and no registry is reachable here): the same rootfs with an `nginx` that answers `nginx -t` as
# nginx does and otherwise serves a page on port 80 with busybox httpd. With it, DMS's files deploy
# as written once their images are mapped (`dms deploy --image`).
rootfs () {
  mkdir -p "$1/bin" "$1/etc" "$1/tmp" "$1/proc" "$1/sys" "$1/dev" "$1/root"
  chmod 1777 "$1/tmp"
  cp /bin/busybox "$1/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$1/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$1/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$1/etc/group"
}
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if podman image exists "$IMAGE"; then
  log "image $IMAGE present"
else
  rootfs "$work/busybox"
  tar -C "$work/busybox" -cf "$work/busybox.tar" .
  podman import --quiet --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' "$work/busybox.tar" "$IMAGE" >/dev/null
  log "built image $IMAGE from busybox-static ($(/bin/busybox --list | wc -l) applets)"
fi
if podman image exists "$NGINX_IMAGE"; then
  log "image $NGINX_IMAGE present"
else
  rootfs "$work/nginx"
  rm -f "$work/nginx/bin/nginx"
  mkdir -p "$work/nginx/www"
  echo 'Server name: dms-nginx-standin' >"$work/nginx/www/index.html"
  cat >"$work/nginx/bin/nginx" <<'NGINX'
#!/bin/sh
# nginx as DMS's ensembles use it: `nginx -t` checks the configuration, `nginx` serves port 80.
if [ "$1" = "-t" ]; then
  echo 'nginx: the configuration file /etc/nginx/nginx.conf syntax is ok' >&2
  echo 'nginx: configuration file /etc/nginx/nginx.conf test is successful' >&2
  exit 0
fi
exec httpd -f -p 80 -h /www
NGINX
  chmod 755 "$work/nginx/bin/nginx"
  tar -C "$work/nginx" -cf "$work/nginx.tar" .
  podman import --quiet --change 'ENV PATH=/bin' --change 'CMD ["nginx"]' "$work/nginx.tar" "$NGINX_IMAGE" >/dev/null
  log "built image $NGINX_IMAGE (busybox httpd behind an nginx stand-in)"
fi

echo "export DOCKER_HOST=unix://$SOCK"
echo "export CONTAINERS_CONF=$CONTAINERS_CONF"
echo "export CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF"
echo "export DMS_TEST_DOCKER_IMAGE=$IMAGE"
echo "export DMS_TEST_NGINX_IMAGE=$NGINX_IMAGE"
