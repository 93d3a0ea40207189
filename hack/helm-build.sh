#!/usr/bin/env bash
# Builds the pinned Helm (hack/versions.env) from the Go module proxy into a
# cache outside the checkout, keyed by a hash of the pin, this script and the
# Go version, as tests/sandbox/build.sh does for the sandbox: a fresh clone
# on the same machine reuses it, a pin change rebuilds.
#
# Prints the path of the helm binary on stdout; progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HELM_VERSION=$(sed -n 's/^HELM_VERSION=//p' "$here/versions.env")
[[ -n $HELM_VERSION ]] || { echo "helm-build: no HELM_VERSION in $here/versions.env" >&2; exit 1; }
command -v go >/dev/null || { echo "helm-build: the Go toolchain (go) is required" >&2; exit 1; }

key=$( { echo "$HELM_VERSION"; cat "$here/helm-build.sh"; go env GOVERSION; } | sha256sum | cut -c1-16)
cache_root=${AIOPS_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aiops-operator/helm}
bin="$cache_root/$key/bin"
if [[ -f "$bin/.complete" ]]; then
  echo "$bin/helm"
  exit 0
fi

mkdir -p "$bin"
# Go's caches are scratch, removed after the build (they are only useful to
# the next rebuild, which a pin change triggers anyway).
scratch="$cache_root/$key.go-scratch"
export GOCACHE="$scratch/build" GOMODCACHE="$scratch/mod" GOFLAGS="-modcacherw"
trap 'rm -rf "$scratch"' EXIT
echo "helm: building $HELM_VERSION into $bin" >&2
start=$(date +%s)
# Helm's go.mod has no replace directives, so `go install` builds it as
# pinned. Without the stamp `helm version` reports a bare v3 and no commit.
GOBIN="$bin" GOFLAGS="-trimpath -modcacherw" CGO_ENABLED=0 go install \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
echo "helm: built in $(( $(date +%s) - start ))s; Go caches used $(du -sh "$scratch" | cut -f1), now removed" >&2
echo "$(( $(date +%s) - start ))" > "$bin/.build-seconds"
touch "$bin/.complete"
echo "$bin/helm"
