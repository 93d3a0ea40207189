#!/usr/bin/env bash
# `make fuzz [FUZZ_SECONDS=N]`: builds the libFuzzer targets of fuzz/ on the
# stable toolchain (coverage instrumentation through rustc's sancov pass,
# as cargo-fuzz does, without its nightly-only sanitizers) and runs each
# for N seconds (default 60) on its corpus: the committed seeds in
# fuzz/corpus/<target>, inputs the project already has (the bench reviews,
# policies/, Kyverno's suites read in place from ../shared), and what
# earlier runs on this machine found (target/fuzz-corpus/). Writes
# target/bench/fuzz.json (per target: inputs, crashes, timeouts, ooms,
# peak RSS) and fails if any target crashed, hung or ran out of memory;
# the input that did it is kept under target/fuzz-artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${FUZZ_SECONDS:-60}
targets=(admission_review policy_yaml model_answer)
conformance=../shared/conformance/kyverno
[[ -d $conformance ]] || { echo "fuzz: $conformance is missing (the policy seeds)" >&2; exit 1; }

host=$(rustc -vV | sed -n 's/^host: //p')
# An explicit --target keeps these flags off build scripts and proc macros,
# which are not linked with libFuzzer.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
cargo build --locked --release --quiet --manifest-path fuzz/Cargo.toml \
  --target "$host" --target-dir target/fuzz --bins
bin=target/fuzz/$host/release

seeds=target/fuzz-seeds
mkdir -p "$seeds/admission_review" target/bench
python3 tests/bench/make_reviews.py "$seeds/admission_review" >/dev/null
rm -f "$seeds/admission_review/reviews.jsonl"

seed_dirs() {
  case $1 in
    admission_review) echo "fuzz/corpus/admission_review $seeds/admission_review" ;;
    policy_yaml) echo "fuzz/corpus/policy_yaml policies $conformance" ;;
    model_answer) echo "fuzz/corpus/model_answer" ;;
  esac
}
max_len() {
  case $1 in
    model_answer) echo 16384 ;;
    *) echo 65536 ;;
  esac
}

results=()
failed=0
for target in "${targets[@]}"; do
  corpus=target/fuzz-corpus/$target
  artifacts=target/fuzz-artifacts/$target/
  log=target/fuzz-logs/$target.log
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  echo "fuzz: $target for ${seconds}s"
  # shellcheck disable=SC2046
  if "$bin/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -max_len="$(max_len "$target")" -print_final_stats=1 -artifact_prefix="$artifacts" \
      "$corpus" $(seed_dirs "$target") >"$log" 2>&1; then
    status=0
  else
    status=$?
    failed=1
    echo "fuzz: $target failed (exit $status); last lines of $log:" >&2
    tail -n 30 "$log" >&2
  fi
  results+=("$target" "$status" "$log" "$corpus")
done

python3 - "$seconds" "${results[@]}" <<'PY'
import json, os, re, sys
seconds = int(sys.argv[1])
rest = sys.argv[2:]
targets = {}
for i in range(0, len(rest), 4):
    name, status, log, corpus = rest[i:i + 4]
    text = open(log, errors="replace").read()
    def stat(key):
        m = re.findall(r"stat::%s:\s*(\d+)" % key, text)
        return int(m[-1]) if m else None
    inputs = stat("number_of_executed_units")
    if inputs is None:  # a crash can end the run before the final stats
        runs = re.findall(r"^#(\d+)\s", text, re.M)
        inputs = int(runs[-1]) if runs else 0
    targets[name] = {
        "inputs": inputs,
        "inputs_per_s": stat("average_exec_per_sec"),
        "crashes": len(re.findall(r"ERROR: libFuzzer: (?!timeout|out-of-memory)", text)),
        "timeouts": text.count("ERROR: libFuzzer: timeout"),
        "ooms": text.count("ERROR: libFuzzer: out-of-memory"),
        "peak_rss_mb": stat("peak_rss_mb"),
        "corpus_files": len(os.listdir(corpus)),
        "exit_status": int(status),
    }
report = {
    "seconds_per_target": seconds,
    "total_inputs": sum(t["inputs"] for t in targets.values()),
    "targets": targets,
}
with open("target/bench/fuzz.json", "w") as out:
    json.dump(report, out, indent=2)
with open("target/bench/fuzz-runs.jsonl", "a") as out:
    out.write(json.dumps(report) + "\n")
for name, t in targets.items():
    print(f"fuzz: {name}: {t['inputs']:,} inputs, {t['crashes']} crashes, "
          f"{t['timeouts']} timeouts, {t['ooms']} out-of-memory, peak RSS {t['peak_rss_mb']} MB")
print(f"fuzz: {report['total_inputs']:,} inputs in all -> target/bench/fuzz.json")
PY
exit "$failed"
