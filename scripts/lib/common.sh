# shellcheck shell=bash
# Helpers shared by scripts/setup.d/*.sh. Sourced, never executed.
# Every step is idempotent: check first, act only if needed, verify at the end.

STAND_STATE_DIR=${STAND_STATE_DIR:-/var/lib/stand-setup}
STAND_CACHE_DIR=${STAND_CACHE_DIR:-/var/cache/stand-setup}
mkdir -p "$STAND_STATE_DIR" "$STAND_CACHE_DIR"
export DEBIAN_FRONTEND=noninteractive

log() { printf '  [%s] %s\n' "${STEP_NAME:-setup}" "$*" >&2; }
die() { printf '  [%s] ERROR: %s\n' "${STEP_NAME:-setup}" "$*" >&2; exit 1; }

# wait_until <timeout-seconds> <description> <command...>
# Polls the command (every 0.2s, bounded by both time and attempt count).
wait_until() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout)) tries=0 max=$((timeout * 5 + 5))
  until "$@" >/dev/null 2>&1; do
    tries=$((tries + 1))
    if (( SECONDS >= deadline || tries >= max )); then
      log "timed out after ${timeout}s waiting for: $what"
      return 1
    fi
    sleep 0.2
  done
}

# Packages (by name) from the list that are not installed yet.
apt_missing() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || printf '%s\n' "$p"
  done
}

# apt_install pkg... : installs only what is missing. `apt-get update` runs at most once
# per 6 hours (stamp file), and only when something actually has to be installed.
# DPkg::Lock::Timeout: wait (bounded) instead of failing if another apt run holds the lock.
apt_install() {
  local missing
  missing=$(apt_missing "$@")
  [[ -z $missing ]] && return 0
  local stamp=$STAND_STATE_DIR/apt-updated
  if [[ -z $(find "$stamp" -mmin -360 2>/dev/null) ]]; then
    log "apt-get update"
    apt-get update -qq -o DPkg::Lock::Timeout=120 >"$STAND_STATE_DIR/apt.log" 2>&1 \
      || { tail -n 20 "$STAND_STATE_DIR/apt.log" >&2; die "apt-get update failed"; }
    touch "$stamp"
  fi
  # shellcheck disable=SC2086
  log "apt-get install" $missing
  # shellcheck disable=SC2086
  apt-get install -y -qq -o DPkg::Lock::Timeout=120 --no-install-recommends $missing </dev/null >"$STAND_STATE_DIR/apt.log" 2>&1 \
    || { tail -n 20 "$STAND_STATE_DIR/apt.log" >&2; die "apt-get install failed: $missing"; }
}

# A Python venv at $1 (created once), from a real interpreter path (not a pyenv shim,
# so the venv does not depend on shims); ensurepip too: Ubuntu's python3 has the venv
# module without it (package python3-venv).
ensure_venv() {
  local venv=$1 py
  "$venv/bin/python" -c 'import sys' 2>/dev/null && return 0
  py=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null || true)
  if [[ -z $py ]] || ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3 python3-venv
    py=/usr/bin/python3
  fi
  log "creating venv $venv with $py"
  rm -rf "$venv"; mkdir -p "${venv%/*}"
  "$py" -m venv "$venv" || die "cannot create venv with $py"
}
