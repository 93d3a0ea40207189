#!/usr/bin/env bash
# Builds the sandbox's pinned upstream components (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, etcd, kwok) from Go
# modules into a cache outside the checkout, keyed by a hash of every pin, so
# a fresh clone on the same machine reuses them and a pin change rebuilds.
#
# Prints the bin directory on stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

command -v go >/dev/null || { echo "build.sh: the Go toolchain (go) is required" >&2; exit 1; }

key=$( { cat "$here/versions.env" "$here/build.sh" \
          "$here/kube/go.mod" "$here/kube/go.sum" "$here/kube/main.go" \
          "$here/etcd/go.mod" "$here/etcd/go.sum" "$here/etcd/main.go"; go env GOVERSION; } \
        | sha256sum | cut -c1-16)
cache_root=${AIOPS_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aiops-operator/sandbox}
bin="$cache_root/$key/bin"

if [[ -f "$bin/.complete" ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
# Go's build and module caches go to a scratch folder beside the binaries and
# are removed once the binaries exist: they reach several GB for Kubernetes,
# are only useful for the next rebuild (which a pin change triggers anyway),
# and a CI machine's disk is not always large.
scratch="$cache_root/$key.go-scratch"
export GOCACHE="$scratch/build" GOMODCACHE="$scratch/mod" GOFLAGS="-modcacherw"
trap 'rm -rf "$scratch"' EXIT
echo "sandbox: building Kubernetes $KUBE_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION into $bin (cold builds take a while)" >&2
start=$(date +%s)

minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
# Without these stamps the binaries report v0.0.0 and kubectl warns about skew.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

(cd "$here/kube" && go build -trimpath -ldflags "$ldflags" -o "$bin/k8s" .)
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  ln -sf k8s "$bin/$c"
done
echo "sandbox: Kubernetes built after $(( $(date +%s) - start ))s" >&2

(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" .)
echo "sandbox: etcd built after $(( $(date +%s) - start ))s" >&2

# kwok's go.mod has no replace directives, so `go install` builds it as pinned.
GOBIN="$bin" GOFLAGS="-trimpath -modcacherw" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
echo "sandbox: kwok built after $(( $(date +%s) - start ))s" >&2

echo "sandbox: Go caches used $(du -sh "$scratch" | cut -f1), now removed" >&2
echo "$(( $(date +%s) - start ))" > "$bin/.build-seconds"
touch "$bin/.complete"
echo "$bin"
