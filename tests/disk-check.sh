#!/usr/bin/env bash
# Disk preflight for `make test` and `make demo`.
#
#   disk-check.sh            fail early, with a clear message, when the disk
#                            holding the checkout has less free space than a
#                            cold run needs (AIOPS_MIN_FREE_GB, default below)
#   disk-check.sh --report   print what the run's outputs take up
#
# A cold run builds the Rust targets (debug, release and the static release
# for the image), the sandbox's Go binaries, Ollama and Helm (each with Go
# build and module caches that are deleted after the build), the image tools'
# storage and the model server's venv; without this check a full disk shows
# up minutes later as an LLVM "IO failure on output stream".
set -euo pipefail
cd "$(dirname "$0")/.."

cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/aiops-operator
# A cold clean-clone run peaked near 7 GiB before the image, Ollama and Helm
# joined it. Now: the debug target about 6 GB on a first build, the release
# and static release targets under 1 GB each, and at most one Go scratch at
# a time (the sandbox's 4.8 GB is the largest; Ollama's is 1.1 GB): about
# 12 GiB; the fuzz targets' instrumented release build (target/fuzz, 2.6 GB)
# comes before the sandbox build: about 14 GiB. Since the Go builds run in
# the background beside the Rust steps (still one Go scratch at a time), the
# sandbox's 4.8 GB can coincide with all the Rust targets: about 16 GiB.
min_gb=${AIOPS_MIN_FREE_GB:-16}

free_kb() { df -Pk "$1" | awk 'NR==2 {print $4}'; }
sizes() {
  for d in target .venv-llm "$cache_root/sandbox" "$cache_root/ollama" "$cache_root/helm" \
    "$cache_root/models" "$HOME/.cargo/registry"; do
    [[ -e $d ]] && du -sh "$d" 2>/dev/null
  done
  return 0
}

if [[ ${1:-} == --report ]]; then
  sizes
  df -h . | awk 'NR==2 {print "free on " $6 ": " $4 " of " $2}'
  exit 0
fi

have_kb=$(free_kb .)
df -h . | awk 'NR==2 {print "free on " $6 ": " $4 " of " $2}'
sizes
# What is already built counts toward the need: a warm checkout needs little.
if [[ -d target/debug && -d target/release ]]; then
  min_gb=$(( min_gb / 4 + 1 ))
fi
if (( have_kb < min_gb * 1024 * 1024 )); then
  echo "disk-check: only $(( have_kb / 1024 )) MiB free on the checkout's disk; a run needs about ${min_gb} GiB" >&2
  echo "disk-check: free some space (or set AIOPS_MIN_FREE_GB if you know better) and run again" >&2
  exit 1
fi
