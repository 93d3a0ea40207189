#!/usr/bin/env bash
# Test: `cluster.sh down` stops every process `up` started and frees every
# port it listened on. Run against a running sandbox; exits non-zero on a leak.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state=${AIOPS_SANDBOX_DIR:-$here/../../target/sandbox}

[[ -f $state/ports.env ]] || { echo "check-down: the sandbox is not running (make cluster-up)" >&2; exit 1; }
# shellcheck source=/dev/null
source "$state/ports.env"
ports=("$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$KCM_PORT" "$SCHEDULER_PORT" "$KWOK_PORT")
pids=()
for f in "$state"/pids/*.pid; do read -r pid _ < "$f"; pids+=("$pid"); done
(( ${#pids[@]} == 5 )) || { echo "check-down: expected 5 recorded processes, found ${#pids[@]}" >&2; exit 1; }

bash "$here/cluster.sh" down

failed=0
for pid in "${pids[@]}"; do
  if [[ -d /proc/$pid ]]; then echo "check-down: process $pid still running" >&2; failed=1; fi
done
listening=$(ss -Hltn)
for port in "${ports[@]}"; do
  if grep -qE "[:.]$port\b" <<< "$listening"; then echo "check-down: port $port still listening" >&2; failed=1; fi
done
[[ -z $(ls -A "$state/pids" 2>/dev/null) ]] || { echo "check-down: PID files left behind" >&2; failed=1; }
[[ ! -e $state/etcd && ! -e $state/kubeconfig ]] || { echo "check-down: state left behind" >&2; failed=1; }

# A second down is a no-op (idempotent).
bash "$here/cluster.sh" down
if (( failed )); then echo "check-down: 0 passed, 1 failed"; exit 1; fi
echo "check-down: ${#pids[@]} processes stopped, ${#ports[@]} ports freed"
