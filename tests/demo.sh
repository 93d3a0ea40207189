#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded defaults.
# Today: bring the sandbox up and show a healthy and a broken Deployment,
# with the evidence a human (or the operator) would look at.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/sandbox/cluster.sh up
bin=$(cat target/sandbox/bin-dir)
kubectl() { "$bin/kubectl" --kubeconfig target/sandbox/kubeconfig "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

ns=demo
kubectl delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$ns" >/dev/null
until kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1; do sleep 0.2; done

say "A healthy Deployment: nginx:1.25.5, 3 replicas"
kubectl -n "$ns" create deployment web --image=nginx:1.25.5 --replicas=3
kubectl -n "$ns" rollout status deployment/web --timeout=90s

say "A broken Deployment: postgres:16.4 without POSTGRES_PASSWORD"
kubectl -n "$ns" create deployment db --image=postgres:16.4
for _ in $(seq 1 120); do
  reason=$(kubectl -n "$ns" get pods -l app=db -o jsonpath='{.items[0].status.containerStatuses[0].state.waiting.reason}' 2>/dev/null || true)
  [[ $reason == CrashLoopBackOff ]] && break
  sleep 0.5
done
kubectl -n "$ns" get pods -o wide

say "Evidence: the crashed container's previous logs"
kubectl -n "$ns" logs deployment/db --previous

say "Evidence: Warning events"
kubectl -n "$ns" get events --field-selector type=Warning \
  -o custom-columns=OBJECT:.involvedObject.name,REASON:.reason,MESSAGE:.message

say "Done. The sandbox keeps running: use it with"
echo "  export KUBECONFIG=$PWD/target/sandbox/kubeconfig; alias kubectl=$bin/kubectl"
echo "  make cluster-down    # to stop it"
