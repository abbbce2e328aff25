#!/usr/bin/env bash
# Build (or reuse) upstream kube-apiserver, kube-controller-manager and etcd
# from Go modules, into a cache outside the checkout. Prints the bin dir.
#
# The versions are read from the go.mod files beside this script, which are
# the one place they are pinned.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

k8s_version="$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$here/controlplane/go.mod")"
etcd_version="$(awk '$1=="require" && $2=="go.etcd.io/etcd/server/v3" {print $3}' "$here/etcd/go.mod")"
cache="${KUBECTL_GITOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-gitops}"
bin="$cache/controlplane-$k8s_version-etcd-$etcd_version/bin"

if [[ -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/etcd" ]]; then
    echo "$bin"
    exit 0
fi
mkdir -p "$bin"
tmp="$bin.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

# /version must report the pinned release, as a release build does.
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version
ldflags="-s -w \
 -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor \
 -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z \
 -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version"

export CGO_ENABLED=0 GOFLAGS=-mod=mod
echo "building kube-apiserver $k8s_version (first time only, several minutes)" >&2
(cd "$here/controlplane" && go build -trimpath -ldflags "$ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
echo "building kube-controller-manager $k8s_version" >&2
(cd "$here/controlplane" && go build -trimpath -ldflags "$ldflags" -o "$tmp/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager)
echo "building etcd $etcd_version" >&2
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
mv "$tmp"/* "$bin/"
echo "$bin"
