#!/usr/bin/env bash
# kubernetes-validate (PyPI) as the `kubernetes-validate` command on PATH.
# Installed into its own venv (/opt/stand/venv) built from the machine's python3 (pyenv
# here), and symlinked into /usr/local/bin so it works in any non-interactive shell,
# without pyenv shims or a particular global Python version.
# Bundled schemas in 1.37.0: Kubernetes 1.25 .. 1.37 (local, strict and non-strict);
# the project validates against KUBE_VERSION=1.33 (matches kubectl v1.33 from 20-helm).
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

KV_VERSION=${STAND_KUBERNETES_VALIDATE_VERSION:-1.37.0}
KUBE_VERSION=1.33
VENV=/opt/stand/venv
LINK=/usr/local/bin/kubernetes-validate

check() {
  local f=$STAND_STATE_DIR/configmap.yaml
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: setup-check\ndata:\n  a: b\n' >"$f"
  "$LINK" --strict --quiet -k "$KUBE_VERSION" "$f"
}
installed_version() { "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null; }

if [[ $(installed_version) == "$KV_VERSION" && $(readlink "$LINK" 2>/dev/null) == "$VENV/bin/kubernetes-validate" ]] && check; then
  log "kubernetes-validate $KV_VERSION already installed"
  exit 0
fi

ensure_venv "$VENV"
log "pip install kubernetes-validate==$KV_VERSION"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "kubernetes-validate==$KV_VERSION" </dev/null \
  || die "pip install kubernetes-validate failed"
ln -sfn "$VENV/bin/kubernetes-validate" "$LINK"
hash -r
check || die "kubernetes-validate --strict -k $KUBE_VERSION rejects a trivial ConfigMap"
log "kubernetes-validate $(installed_version) -> $LINK (validated a ConfigMap, strict, k8s $KUBE_VERSION)"
