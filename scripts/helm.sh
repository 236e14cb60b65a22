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
# (with the module download, empty Go caches), 14 s with Go's caches warm, 0.01 s once built. $HELM_BIN names a Helm to use instead.
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

if [ ! -x "$HELM" ]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "helm.sh: Go is needed to build Helm $HELM_VERSION (apt-get install -y golang-go, or https://go.dev/dl), or set HELM_BIN to a Helm binary" >&2
    exit 2
  fi
  # Helm v4.3.2's go.mod says `go 1.26.0`; Debian bookworm's golang-go (1.19) is too old to build it
  # or to fetch a newer toolchain itself (GOTOOLCHAIN needs Go 1.21).
  have=$(go env GOVERSION | sed -n 's/^go\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  read -r major minor <<<"${have:-0 0}"
  if ((major < 1 || (major == 1 && minor < 26))); then
    echo "helm.sh: Helm $HELM_VERSION needs Go 1.26 or later to build, but $(command -v go) is $(go env GOVERSION); install Go 1.26 (https://go.dev/dl) or set HELM_BIN to a Helm binary" >&2
    exit 2
  fi
  mkdir -p "$BIN"
  echo "helm.sh: building Helm $HELM_VERSION from helm.sh/helm/v4 (first time only; a few minutes)" >&2
  started=$(date +%s)
  tmp=$(mktemp -d "$BIN/.helm-build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # -mod=mod: resolve from the module's go.mod, not a vendor directory; GOBIN: into a scratch
  # directory first, renamed into place, so an interrupted build never leaves a broken binary.
  GOFLAGS=-mod=mod GOBIN="$tmp" go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >&2
  mv "$tmp/helm" "$HELM"
  echo "helm.sh: built $HELM in $(($(date +%s) - started)) s" >&2
fi

echo "$HELM"
