#!/usr/bin/env bash
# Build (or reuse) krew and krew's validate-krew-manifest from the Go module
# proxy, into a cache outside the checkout. Prints the bin dir. Only the krew
# test needs them (a few minutes the first time on 2 cores, so not part of
# `make install`).
set -euo pipefail
version=v0.4.3
cache="${KUBECTL_GITOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-gitops}"
bin="$cache/krew-$version/bin"

if [[ -x "$bin/krew" && -x "$bin/validate-krew-manifest" ]]; then
    echo "$bin"
    exit 0
fi
mkdir -p "$bin"
tmp="$bin.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
echo "building krew $version from Go modules into $bin" >&2
# Outside any module, so nothing here pins krew's dependencies.
(cd "$tmp" && GOBIN="$tmp" go install "sigs.k8s.io/krew/cmd/krew@$version" \
    "sigs.k8s.io/krew/cmd/validate-krew-manifest@$version") >&2
mv "$tmp/krew" "$tmp/validate-krew-manifest" "$bin/"
echo "$bin"
