#!/usr/bin/env bash
# Builds the pinned promtool (hack/versions.env) from the Go module proxy into
# a cache outside the checkout, keyed by a hash of the pin, this script and
# the Go version, as hack/helm-build.sh does for Helm: a fresh clone on the
# same machine reuses it, a pin change rebuilds.
#
# The binary is built in a staging folder and renamed into place only once
# complete, under a lock, so a second caller waits for the first build and
# never runs a half-written binary.
#
# Prints the path of the promtool binary on stdout; progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROMTOOL_VERSION=$(sed -n 's/^PROMTOOL_VERSION=//p' "$here/versions.env")
fail() { echo "promtool-build: $*" >&2; exit 1; }
[[ -n $PROMTOOL_VERSION ]] || fail "no PROMTOOL_VERSION in $here/versions.env"
for tool in go flock sha256sum; do
  command -v "$tool" >/dev/null || fail "$tool is required"
done

# Comments are left out of the key: rewording one must not cost a rebuild.
key=$( { echo "$PROMTOOL_VERSION"; grep -v '^[[:space:]]*#' "$here/promtool-build.sh"; go env GOVERSION; } \
        | sha256sum | cut -c1-16)
cache_root=${AIOPS_PROMTOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aiops-operator/promtool}
bin="$cache_root/$key/bin"
if [[ -f "$bin/.complete" ]]; then
  echo "$bin/promtool"
  exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.build.lock"
if ! flock -n 9; then
  echo "promtool: another build of this cache is running; waiting for it" >&2
  flock 9
fi
if [[ -f "$bin/.complete" ]]; then
  echo "$bin/promtool"
  exit 0
fi

# Go's caches are scratch, removed after the build, also on failure (they
# are only useful to the next rebuild, which a pin change triggers anyway).
scratch="$cache_root/$key.scratch"
rm -rf "$scratch" "$cache_root/$key"
mkdir -p "$scratch/bin"
export GOCACHE="$scratch/go-build" GOMODCACHE="$scratch/go-mod"
trap 'rm -rf "$scratch"' EXIT
echo "promtool: building $PROMTOOL_VERSION into $bin (a cold build takes several minutes)" >&2
start=$(date +%s)
# Prometheus' go.mod has no replace directives, so `go install` builds it as
# pinned. Niced: other builds and tests share the machine's cores. The
# version stamp makes `promtool --version` say which release it is.
release="3.${PROMTOOL_VERSION#v0.3}"
GOBIN="$scratch/bin" GOFLAGS="-trimpath -modcacherw" CGO_ENABLED=0 nice -n 10 go install \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
  "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION" \
  || fail "building github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION failed (see above)"
"$scratch/bin/promtool" --version >/dev/null || fail "the built promtool does not run"
seconds=$(( $(date +%s) - start ))
echo "promtool: built in ${seconds}s; Go caches used $(du -sh "$scratch" | cut -f1), now removed" >&2
echo "$seconds" > "$scratch/bin/.build-seconds"
touch "$scratch/bin/.complete"
mkdir -p "$cache_root/$key"
mv "$scratch/bin" "$bin"
echo "$bin/promtool"
