#!/usr/bin/env bash
# Builds Ollama from its pinned Go module, with its CPU backends from the same
# module's CMake build, into a cache outside the checkout keyed by a hash of
# every pin, so a fresh clone on the same machine reuses it and a pin change
# rebuilds. Layout under the key: bin/ollama and lib/ollama/ (the binary loads
# its ggml backends from ../lib/ollama at run time; without them it still
# runs, but without SIMD, about 35 times slower).
#
# Prints the key folder on stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

for tool in go cmake cc c++ apt-get dpkg-deb sha256sum flock; do
  command -v "$tool" >/dev/null || { echo "ollama build: $tool is required" >&2; exit 1; }
done

# Comments are left out of the key: rewording one must not cost a rebuild.
key=$( { grep -hv '^[[:space:]]*#' "$here/versions.env" "$here/build.sh"; go env GOVERSION; } \
        | sha256sum | cut -c1-16)
cache_root=${AIOPS_OLLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aiops-operator/ollama}
out="$cache_root/$key"

if [[ -f "$out/.complete" ]]; then
  echo "$out"
  exit 0
fi

# One build at a time per cache: a second caller (`make ollama-up` beside
# `make test`) waits for the first and then finds its result, instead of
# removing the scratch folder the first one is building in.
mkdir -p "$cache_root"
exec 9>"$cache_root/.build.lock"
if ! flock -n 9; then
  echo "ollama: another build of this cache is running; waiting for it" >&2
  flock 9
fi
if [[ -f "$out/.complete" ]]; then
  echo "$out"
  exit 0
fi

# Go's build and module caches, the .debs and the CMake tree are only needed
# while building (several GB together); they are removed afterwards, also on
# failure.
scratch="$cache_root/$key.scratch"
rm -rf "$scratch" "$out"
mkdir -p "$scratch/debs" "$scratch/include/miniaudio" "$out/bin" "$out/lib"
export GOCACHE="$scratch/go-build" GOMODCACHE="$scratch/go-mod" GOFLAGS="-modcacherw"
trap 'rm -rf "$scratch"' EXIT
echo "ollama: building $OLLAMA_VERSION into $out (a cold build takes 10-20 minutes)" >&2
start=$(date +%s)

# The headers: fetched through apt, refused unless their sha256 matches.
# A fresh machine may have no package index yet; read it once and retry.
# shellcheck source=../../hack/apt-lock.sh
source "$here/../../hack/apt-lock.sh"
(apt_lock && cd "$scratch/debs" && { apt-get download "$NLOHMANN_DEB" "$STB_DEB" >&2 \
  || { apt-get update >&2 && apt-get download "$NLOHMANN_DEB" "$STB_DEB" >&2; }; })
fetched() { ls "$scratch/debs/${1%%=*}_"*.deb; }
for pin in "$NLOHMANN_DEB:$NLOHMANN_DEB_SHA256" "$STB_DEB:$STB_DEB_SHA256"; do
  deb=$(fetched "${pin%%:*}")
  echo "${pin##*:}  $deb" | sha256sum --check --quiet >&2 \
    || { echo "ollama build: $deb does not match its pinned sha256" >&2; exit 1; }
  dpkg-deb -x "$deb" "$scratch/deb-root"
done

go mod download github.com/ollama/ollama@"$OLLAMA_VERSION" github.com/gen2brain/malgo@"$MALGO_VERSION"
src="$GOMODCACHE/github.com/ollama/ollama@$OLLAMA_VERSION"
cp "$GOMODCACHE/github.com/gen2brain/malgo@$MALGO_VERSION/miniaudio.h" "$scratch/include/miniaudio/"
export CGO_CPPFLAGS="-I$scratch/deb-root/usr/include -I$scratch/include"

jobs=${AIOPS_OLLAMA_JOBS:-2}
GOBIN="$out/bin" go install -trimpath -p "$jobs" \
  -ldflags "-s -w -X github.com/ollama/ollama/version.Version=${OLLAMA_VERSION#v}" \
  "github.com/ollama/ollama@$OLLAMA_VERSION"
echo "ollama: Go binary built after $(( $(date +%s) - start ))s" >&2

# One shared library per x86-64 CPU level; Ollama picks the best the machine
# supports when it starts, so the cache also works on a different CPU.
cmake -S "$src" -B "$scratch/cmake" -DCMAKE_BUILD_TYPE=Release -DGGML_CCACHE=OFF >&2
cmake --build "$scratch/cmake" --parallel "$jobs" >&2
cp -r "$scratch/cmake/lib/ollama" "$out/lib/"
echo "ollama: CPU backends built after $(( $(date +%s) - start ))s" >&2

echo "ollama: scratch used $(du -sh "$scratch" | cut -f1), now removed" >&2
echo "$(( $(date +%s) - start ))" > "$out/.build-seconds"
touch "$out/.complete"
echo "$out"
