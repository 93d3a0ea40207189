#!/usr/bin/env bash
# The pinned Go builds that `make test` needs, one after the other (one Go
# scratch folder at a time), for tests/run-all.sh to run in the background:
#   tests/tools-build.sh DIR
# Each tool's output goes to DIR/<tool>.log and, once its build ends, its exit
# status to DIR/<tool>.status, so the run can wait for one tool and go on while
# the next builds. The order is the order the run needs them: the sandbox and
# Helm for the live and chart steps, promtool for the alert rules, Ollama (the
# longest, 10-40 minutes cold) only for the one test that talks to it, which
# runs last. The first failure ends the chain: the tools after it get no
# status, and their waiters report the failed one. When cached each build is
# a hash check.
set -uo pipefail
cd "$(dirname "$0")/.."

dir=${1:?usage: tests/tools-build.sh DIR}
mkdir -p "$dir"

build() {
  case $1 in
    sandbox) bash tests/sandbox/build.sh ;;
    helm) bash hack/helm-build.sh ;;
    promtool) bash hack/promtool-build.sh ;;
    ollama) bash tests/ollama/build.sh ;;
  esac
}

for tool in sandbox helm promtool ollama; do
  start=$(date +%s)
  build "$tool" </dev/null >"$dir/$tool.log" 2>&1
  status=$?
  echo "tools-build: $tool ended with exit $status after $(($(date +%s) - start)) s" >>"$dir/$tool.log"
  # Written whole and then renamed, so a waiter never reads half a status.
  echo "$status" >"$dir/$tool.status.tmp" && mv "$dir/$tool.status.tmp" "$dir/$tool.status"
  ((status == 0)) || exit "$status"
done
