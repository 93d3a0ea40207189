#!/usr/bin/env bash
# Test: a model file that does not match its pinned sha256 is never served.
# A copy of the verified SmolLM2 GGUF with one byte changed is planted in a
# scratch cache; the install must exit non-zero and delete it, and
# `server.sh up` must fail without starting a server. Needs the verified
# model in the real cache (`python3 tests/llm/install.py smollm2`); downloads
# nothing.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

real=$(python3 "$here/install.py" smollm2 --print-path 2>/dev/null) \
  || { echo "check-refuses: the verified SmolLM2 model is not installed" >&2; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export AIOPS_LLM_CACHE=$scratch/cache AIOPS_LLM_DIR=$scratch/state
mkdir -p "$AIOPS_LLM_CACHE"
planted=$AIOPS_LLM_CACHE/$(basename "$real")

plant() {
  cp "$real" "$planted"
  printf '\xff' | dd of="$planted" bs=1 seek=4096 conv=notrunc status=none
}

failed=0
plant
if python3 "$here/install.py" smollm2 --print-path > "$scratch/out" 2> "$scratch/err"; then
  echo "check-refuses: install accepted a tampered model" >&2; failed=1
fi
grep -q 'does not match the pinned model' "$scratch/err" || { echo "check-refuses: no clear refusal message" >&2; cat "$scratch/err" >&2; failed=1; }
[[ ! -s $scratch/out ]] || { echo "check-refuses: install printed a model path" >&2; failed=1; }
[[ ! -e $planted ]] || { echo "check-refuses: the tampered file was not deleted" >&2; failed=1; }

plant
if bash "$here/server.sh" up smollm2 > "$scratch/out" 2> "$scratch/err"; then
  echo "check-refuses: server.sh up started on a tampered model" >&2; failed=1
  bash "$here/server.sh" down || true
fi
[[ ! -e $AIOPS_LLM_DIR/pid && ! -e $planted ]] || { echo "check-refuses: a server was recorded or the file kept" >&2; failed=1; }

if (( failed )); then echo "check-refuses: 0 passed, 1 failed"; exit 1; fi
echo "check-refuses: a tampered model is refused, deleted and never served"
