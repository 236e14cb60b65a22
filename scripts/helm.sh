#!/usr/bin/env bash
# Builds Helm (for `helm lint` / `helm template` of deploy/helm/, in test/integration/helm.test.ts and
# CI) from its Go module and prints the binary's path on stdout.
#
#   bash scripts/helm.sh            # build when missing, print the path
#   HELM=$(bash scripts/helm.sh)    # what CI and the tests do
#
# Why from source: the machines this runs on reach package registries only (the Go module proxy
# serves helm.sh/helm/v4), not get.helm.sh. The build is cached per version under
# <state>/bin/helm-<version> (<state> is $EVENTSTREAM_SERVICES_DIR or <repo>/.services, as for
# scripts/services.sh), so only the first call pays for it: measured 4 min 17 s on 2 shared cores
# (with the module download, empty Go caches), 14 s with Go's caches warm, 0.01 s once built;
# 28 s on a machine whose Go is too old (6 s fetching Go, below, then a warm-cache build).
# $HELM_BIN names a Helm to use instead.
# Log lines go to stderr; only the path goes to stdout.
set -euo pipefail

HELM_VERSION=v4.3.2
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
SVC=$(realpath -m "${EVENTSTREAM_SERVICES_DIR:-$REPO/.services}")
BIN="$SVC/bin"
HELM="$BIN/helm-$HELM_VERSION"

if [ -n "${HELM_BIN:-}" ]; then
  echo "$HELM_BIN"
  exit 0
fi

# Helm v4.3.2's go.mod says `go 1.26.0`. Debian bookworm's golang-go (1.19) is too old to build it,
# and too old to fetch a newer toolchain by itself (GOTOOLCHAIN needs Go 1.21), so without a Go
# 1.26 this fetches one: Go's toolchains are published as modules on the Go module proxy
# (golang.org/toolchain, the zip `GOTOOLCHAIN=auto` downloads), ~70 MB, cached beside Helm.
GO_TOOLCHAIN=go1.26.8
go_ok() {
  local have major minor
  have=$("$1" env GOVERSION 2>/dev/null | sed -n 's/^go\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  read -r major minor <<<"${have:-0 0}"
  ((major > 1 || (major == 1 && minor >= 26)))
}
find_go() {
  local go cached="$BIN/$GO_TOOLCHAIN/bin/go" arch zip
  go=$(command -v go || true)
  if [ -n "$go" ] && go_ok "$go"; then echo "$go"; return; fi
  if [ -x "$cached" ]; then echo "$cached"; return; fi
  case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64 | arm64) arch=arm64 ;; *) arch=unsupported ;; esac
  echo "helm.sh: no Go 1.26 here (${go:-none on PATH}); fetching $GO_TOOLCHAIN from the Go module proxy" >&2
  zip="$BIN/.$GO_TOOLCHAIN.zip"
  curl -fsSL --retry 3 -o "$zip" "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-$GO_TOOLCHAIN.linux-$arch.zip" || {
    echo "helm.sh: could not fetch Go $GO_TOOLCHAIN; install Go 1.26 (https://go.dev/dl) or set HELM_BIN to a Helm binary" >&2
    exit 2
  }
  rm -rf "$BIN/.toolchain" && mkdir -p "$BIN/.toolchain"
  unzip -q "$zip" -d "$BIN/.toolchain"
  # The module zip holds the Go tree under golang.org/toolchain@<version>/.
  mv "$BIN/.toolchain/golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.linux-$arch" "$BIN/$GO_TOOLCHAIN"
  rm -rf "$BIN/.toolchain" "$zip"
  chmod +x "$BIN/$GO_TOOLCHAIN/bin/"* "$BIN/$GO_TOOLCHAIN/pkg/tool/"*/* 2>/dev/null || true
  echo "$cached"
}

if [ ! -x "$HELM" ]; then
  mkdir -p "$BIN"
  go=$(find_go)
  echo "helm.sh: building Helm $HELM_VERSION from helm.sh/helm/v4 with $("$go" env GOVERSION) (first time only; a few minutes)" >&2
  started=$(date +%s)
  tmp=$(mktemp -d "$BIN/.helm-build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # -mod=mod: resolve from the module's go.mod, not a vendor directory; GOBIN: into a scratch
  # directory first, renamed into place, so an interrupted build never leaves a broken binary;
  # GOTOOLCHAIN=local: build with this Go, never switch to another one behind our back.
  GOFLAGS=-mod=mod GOTOOLCHAIN=local GOBIN="$tmp" "$go" install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >&2
  mv "$tmp/helm" "$HELM"
  echo "helm.sh: built $HELM in $(($(date +%s) - started)) s" >&2
fi

echo "$HELM"
