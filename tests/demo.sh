#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded defaults — a local
# sandbox cluster, the operator running against it, and a human approving
# a fix with plain kubectl:
#   1. a healthy Deployment is broken by a bad image tag;
#   2. the operator opens one Remediation with a rule-based fix, guarded and
#      validated by a server-side dry run (the diff is shown);
#   3. `kubectl patch rem … approved=true` approves exactly that proposal;
#   4. the fix is applied and verified; the Remediation ends Verified;
#   5. a failure the rules cannot fix (a misspelled repository in a brand-new
#      Deployment, no history) goes to the local model (Qwen2.5-Coder-0.5B on
#      llama.cpp, sha256-verified); its proposal passes the same guardrails and
#      dry run, and is approved with kubectl when it is valid.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

bash tests/disk-check.sh >/dev/null

say "Sandbox cluster (real kube-apiserver, controllers, kwok nodes)"
bash tests/sandbox/cluster.sh up
bin=$(cat target/sandbox/bin-dir)
export KUBECONFIG=$PWD/target/sandbox/kubeconfig
kubectl() { "$bin/kubectl" "$@"; }

say "Operator: build and start (webhook + controller, as its ServiceAccount)"
cargo build --release --locked --quiet
ln -sf aiops-operator target/release/kubectl-aiops
port=$(AIOPS_BIN=$PWD/target/release/aiops-operator bash tests/operator/local.sh start demo-operator)
echo "operator serving https://127.0.0.1:$port (log: target/operator/demo-operator/log)"
stop_operator() {
  bash tests/operator/local.sh stop demo-operator
  bash tests/operator/local.sh uninstall
  bash tests/llm/server.sh down >/dev/null 2>&1 || true
}
trap stop_operator EXIT

ns=demo
kubectl delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$ns" >/dev/null
until kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1; do sleep 0.2; done

say "1. A healthy Deployment: nginx:1.25.5, 3 replicas"
kubectl -n "$ns" create deployment web --image=nginx:1.25.5 --replicas=3
kubectl -n "$ns" rollout status deployment/web --timeout=90s

say "   ... broken by a typo in the image tag"
kubectl -n "$ns" set image deployment/web nginx=nginx:1.25.55
for _ in $(seq 1 120); do
  phase=$(kubectl -n "$ns" get rem -o jsonpath='{.items[0].status.phase}' 2>/dev/null || true)
  [[ $phase == Proposed ]] && break
  sleep 0.5
done
kubectl -n "$ns" get pods

say "2. One Remediation for the workload, with a proposal"
kubectl -n "$ns" get rem
rem=$(kubectl -n "$ns" get rem -o jsonpath='{.items[0].metadata.name}')
say "   kubectl aiops show $rem"
target/release/kubectl-aiops -n "$ns" show "$rem"

say "3. Approve it with plain kubectl"
echo "+ kubectl -n $ns patch rem $rem --type=merge -p '{\"spec\":{\"approved\":true}}'"
kubectl -n "$ns" patch rem "$rem" --type=merge -p '{"spec":{"approved":true}}'
kubectl -n "$ns" get rem "$rem" -o jsonpath='approved by {.spec.approval.approvedBy} for proposal {.spec.approval.proposalHash}{"\n"}'

say "4. Applied with server-side apply, rollout verified"
for _ in $(seq 1 180); do
  phase=$(kubectl -n "$ns" get rem "$rem" -o jsonpath='{.status.phase}')
  [[ $phase == Verified || $phase == RolledBack || $phase == Failed ]] && break
  sleep 0.5
done
kubectl -n "$ns" get rem
kubectl -n "$ns" get pods
kubectl -n "$ns" get deployment web -o jsonpath='image now: {.spec.template.spec.containers[0].image}{"\n"}'
say "   Events on the Remediation"
kubectl -n "$ns" get events --field-selector involvedObject.name="$rem" \
  -o custom-columns=REASON:.reason,MESSAGE:.message
[[ $phase == Verified ]] || { echo "demo: the remediation ended $phase" >&2; exit 1; }

say "5. A failure the rules cannot fix: a new Deployment with a misspelled repository"
say "   Local model server (xllamacpp, Qwen2.5-Coder-0.5B Q4_K_M, sha256-verified)"
llm_url=$(bash tests/llm/server.sh up qwen | tail -1)
echo "model server: $llm_url"
bash tests/operator/local.sh stop demo-operator
port=$(AIOPS_BIN=$PWD/target/release/aiops-operator AIOPS_LLM_URL=$llm_url \
  AIOPS_LLM_MODEL=qwen2.5-coder-0.5b bash tests/operator/local.sh start demo-operator)
echo "operator restarted with the openai provider -> $llm_url"
kubectl -n "$ns" create deployment api --image=ngnix:1.25.5 --replicas=2
for _ in $(seq 1 240); do
  phase=$(kubectl -n "$ns" get rem -l aiops-operator.dev/workload-uid="$(kubectl -n "$ns" get deploy api -o jsonpath='{.metadata.uid}')" \
    -o jsonpath='{.items[0].status.phase}' 2>/dev/null || true)
  [[ $phase == Proposed || $phase == Failed ]] && break
  sleep 1
done
rem2=$(kubectl -n "$ns" get rem -l aiops-operator.dev/workload-uid="$(kubectl -n "$ns" get deploy api -o jsonpath='{.metadata.uid}')" -o jsonpath='{.items[0].metadata.name}')
kubectl -n "$ns" get rem
say "   kubectl aiops show $rem2 (the model's proposal, its guardrail verdict and dry-run diff)"
target/release/kubectl-aiops -n "$ns" show "$rem2"
ready=$(kubectl -n "$ns" get rem "$rem2" -o jsonpath='{.status.conditions[?(@.type=="ReadyForReview")].status}')
if [[ $ready == True ]]; then
  say "   The proposal is valid: approve it with kubectl"
  kubectl -n "$ns" patch rem "$rem2" --type=merge -p '{"spec":{"approved":true}}'
  for _ in $(seq 1 180); do
    phase=$(kubectl -n "$ns" get rem "$rem2" -o jsonpath='{.status.phase}')
    [[ $phase == Verified || $phase == RolledBack || $phase == Failed ]] && break
    sleep 0.5
  done
  kubectl -n "$ns" get rem "$rem2"
  kubectl -n "$ns" get deployment api -o jsonpath='image now: {.spec.template.spec.containers[0].image}{"\n"}'
else
  say "   The model's proposal is not ready for review (refused or a diagnosis only); nothing is applied"
fi

say "Done. The sandbox keeps running (make cluster-down stops it); make run starts the operator in the foreground."
