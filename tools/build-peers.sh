#!/usr/bin/env bash
# Build (or reuse) the peers the benches compare against, from the Go module
# proxy, into a cache outside the checkout:
#   kapp     carvel.dev/kapp at $kapp_version
#   fluxssa  bench/fluxssa, a small harness around github.com/fluxcd/pkg/ssa
#            (the apply engine of Flux's kustomize-controller); its cache
#            directory is named after a hash of its sources, so an edit
#            rebuilds it.
# Usage: tools/build-peers.sh [kapp] [fluxssa]   (default: both)
# Prints one "name path-to-binary" line per peer that is available. A peer
# that cannot be built gets one line on stderr and is left out (exit 0): the
# benches go on without it. A failed build leaves build-failed.log in its
# cache directory and is not retried until that file is deleted, so that
# `make bench` does not pay for the same failure in every bench.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cache="${KUBECTL_GITOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-gitops}"
kapp_version=v0.64.2
export CGO_ENABLED=0

# build NAME DIR BUILD-FUNCTION: reuse DIR/bin/NAME, or build it once.
build() {
    local name="$1" dir="$2" fn="$3"
    if [[ -x "$dir/bin/$name" ]]; then
        echo "$name $dir/bin/$name"
        return
    fi
    if [[ -f "$dir/build-failed.log" ]]; then
        echo "build-peers: $name: an earlier build failed (see $dir/build-failed.log; delete it to retry); benches skip $name" >&2
        return
    fi
    mkdir -p "$dir"
    local tmp
    tmp="$(mktemp -d "$dir/tmp.XXXXXX")"
    echo "build-peers: building $name into $dir/bin (first time only, a few minutes)" >&2
    if "$fn" "$tmp" >"$tmp/build.log" 2>&1; then
        mkdir -p "$dir/bin"
        mv "$tmp/$name" "$dir/bin/$name"
        rm -rf "$tmp"
        echo "$name $dir/bin/$name"
    else
        mv "$tmp/build.log" "$dir/build-failed.log"
        rm -rf "$tmp"
        local why
        why="$(grep -m1 -iE 'error|cannot|not found|no such|disabled|:[0-9]+:[0-9]+: ' "$dir/build-failed.log" | sed 's/^[[:space:]]*//')"
        echo "build-peers: $name could not be built (${why:-see the log}; $dir/build-failed.log); benches skip $name" >&2
    fi
}

# kapp's `go install ...@version` needs the proxy's version list, and its
# module zip carries only vendor/modules.txt, so: build from a writable copy
# of the downloaded module, resolving dependencies from its own go.mod/go.sum.
build_kapp() {
    local out="$1" json src
    json="$(cd "$out" && go mod download -json "carvel.dev/kapp@$kapp_version")" || { echo "$json"; return 1; }
    src="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")"
    [[ -n "$src" ]] || { echo "$json"; return 1; }
    cp -r "$src" "$out/src" && chmod -R u+w "$out/src" && rm -rf "$out/src/vendor" || return 1
    (cd "$out/src" && go build -mod=mod -trimpath \
        -ldflags "-s -w -X carvel.dev/kapp/pkg/kapp/version.Version=$kapp_version" \
        -o "$out/kapp" ./cmd/kapp) || return 1
    rm -rf "$out/src"
}

# The harness is its own module (bench/fluxssa/go.mod and go.sum pin it).
build_fluxssa() {
    (cd "$root/bench/fluxssa" && go build -mod=mod -trimpath -ldflags "-s -w" -o "$1/fluxssa" .)
}

# Arguments name the peers to build (default: all).
want=" ${*:-kapp fluxssa} "
fluxssa_hash="$(cat "$root/bench/fluxssa/go.mod" "$root/bench/fluxssa/go.sum" "$root/bench/fluxssa/main.go" 2>/dev/null | sha256sum | cut -c1-12)"
[[ "$want" != *" kapp "* ]] || build kapp "$cache/kapp-$kapp_version" build_kapp
[[ "$want" != *" fluxssa "* ]] || build fluxssa "$cache/fluxssa-$fluxssa_hash" build_fluxssa
