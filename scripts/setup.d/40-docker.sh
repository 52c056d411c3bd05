#!/usr/bin/env bash
# Docker Engine from Debian (docker.io 20.10, API 1.41) with dockerd running in the background
# (no systemd here), socket /var/run/docker.sock, log /var/log/dockerd.log.
#
# Flags: none needed. On these VMs (kernel 6.x, cgroup v1, ext4 root, overlay + netfilter
# built in) dockerd's defaults work: overlay2 storage, iptables(-nft) with the docker0 bridge,
# so port publishing and user networks work. Only if a default start fails do we retry once
# with --storage-driver=vfs (no overlayfs) and --iptables=false (no netfilter) as a last resort;
# that mode is slower and loses published ports, so it is logged loudly.
# Note: a newer static docker CLI may shadow /usr/bin/docker in /usr/local/bin; it negotiates
# down to the daemon's API 1.41, so either works.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

LOG=/var/log/dockerd.log
docker_up() { timeout 10 docker info >/dev/null 2>&1; }

# A Docker that already answers is kept, whatever installed it (GitHub's runners ship
# Docker CE, whose containerd.io conflicts with Debian's docker.io).
if docker_up; then
  log "dockerd already running ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"
  exit 0
fi

apt_install docker.io
command -v docker >/dev/null || die "no docker CLI after installing docker.io"

start_dockerd() {
  log "starting dockerd${*:+ $*}"
  printf '\n==== %s setup: dockerd %s\n' "$(date -Is)" "$*" >>"$LOG"
  # setsid + nohup: dockerd must outlive this script and the CI step that ran it.
  setsid nohup /usr/sbin/dockerd "$@" >>"$LOG" 2>&1 </dev/null &
  echo $! >"$STAND_STATE_DIR/dockerd.pid"
}

if pgrep -x dockerd >/dev/null; then
  log "dockerd process exists but does not answer yet; waiting"
else
  start_dockerd
fi
if ! wait_until 60 "docker info" docker_up; then
  pid=$(cat "$STAND_STATE_DIR/dockerd.pid" 2>/dev/null || true)
  tail -n 20 "$LOG" >&2 || true
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    die "dockerd (pid $pid) is running but not answering on /var/run/docker.sock; see $LOG"
  fi
  log "WARNING: dockerd failed with defaults; retrying with --storage-driver=vfs --iptables=false"
  start_dockerd --storage-driver=vfs --iptables=false
  wait_until 60 "docker info (fallback flags)" docker_up || { tail -n 20 "$LOG" >&2; die "dockerd does not start; see $LOG"; }
fi
log "dockerd $(docker version -f '{{.Server.Version}}') up, storage driver $(docker info -f '{{.Driver}}')"
