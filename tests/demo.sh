#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded defaults — a local
# sandbox cluster, the operator running against it (admission in Enforce),
# and a user with plain kubectl. Prevention first:
#   P1. the registered ValidatingWebhookConfiguration, in one screen;
#   P2. a privileged Pod with a :latest image is denied, every violated rule
#       listed;
#   P3. a ConfigMap patch switches to Audit without a restart: the same Pod
#       is admitted with warnings, a Warning Event and a PolicyReport result;
#   P4. back to Enforce, the Pod deleted, so the repair starts clean.
# Each outcome is checked, and the part prints how long it took. Then repair,
# with a human approving a fix:
#   1. a healthy Deployment is broken by a bad image tag;
#   2. the operator opens one Remediation with a rule-based fix, guarded and
#      validated by a server-side dry run (the diff is shown);
#   3. `kubectl patch rem … approved=true` approves exactly that proposal;
#   4. the fix is applied and verified; the Remediation ends Verified;
#   5. a failure the rules cannot fix (a misspelled repository in a brand-new
#      Deployment, no history) goes to the local model (Qwen2.5-Coder-0.5B,
#      sha256-verified) served by Ollama built here (the first run builds it,
#      10-20 minutes; DEMO_LLM=llamacpp uses llama.cpp's server instead); its
#      proposal passes the same guardrails and dry run, and is approved with
#      kubectl when it is valid;
#   6. from violation to fix: in Audit a Deployment with nginx:latest is
#      admitted; the policy scan reports it and opens a Remediation pinning
#      the digest its pods run; approved with kubectl, applied and verified,
#      it leaves the PolicyReport on the next scan.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
seconds_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
demo_start=$EPOCHREALTIME

bash tests/disk-check.sh >/dev/null

say "Sandbox cluster (real kube-apiserver, controllers, kwok nodes)"
bash tests/sandbox/cluster.sh up
bin=$(cat target/sandbox/bin-dir)
export KUBECONFIG=$PWD/target/sandbox/kubeconfig
kubectl() { "$bin/kubectl" "$@"; }

say "Operator: build and start (webhook + controller, as its ServiceAccount; admission in Enforce)"
cargo build --release --locked --quiet
ln -sf aiops-operator target/release/kubectl-aiops
# Enforce: every policy denies, so the demo shows a denial listing every
# violated rule; the objects the repair part creates comply.
export AIOPS_MODE=Enforce
# A reused sandbox may still run operators a test left (a test's operator
# lives as long as its test binary's process group): one of them leading
# would answer for the demo's.
bash tests/operator/local.sh stop-all
port=$(AIOPS_BIN=$PWD/target/release/aiops-operator bash tests/operator/local.sh start demo-operator)
echo "operator serving https://127.0.0.1:$port (log: target/operator/demo-operator/log)"
stop_operator() {
  bash tests/operator/local.sh stop demo-operator
  bash tests/operator/local.sh uninstall
  bash tests/llm/server.sh down >/dev/null 2>&1 || true
  bash tests/ollama/server.sh down >/dev/null 2>&1 || true
}
trap stop_operator EXIT

ns=demo
kubectl delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$ns" >/dev/null
until kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1; do sleep 0.2; done

# Prevention. Every outcome is checked; the demo stops at the first that
# differs from what it says.
fail() { echo "demo: $*" >&2; exit 1; }
reply=""

# Runs a check until it passes, for at most $1 seconds: registrations and
# ConfigMap changes reach the API server and the webhook asynchronously, so
# the demo polls briefly instead of sleeping a fixed time.
within() {
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < deadline)) || fail "$what: still not the case after $limit s; last reply:
$reply"
    sleep 0.2
  done
}

set_modes() {
  echo "+ kubectl -n aiops-system patch configmap aiops-operator-config --type=merge -p '$1'"
  kubectl -n aiops-system patch configmap aiops-operator-config --type=merge -p "$1" >/dev/null
}

risky=target/demo/risky-pod.yaml
# What the risky Pod breaks, as policy/rule: the denial, the warnings and
# the report must each name all of them.
risky_rules=(disallow-privileged-containers/no-privileged-containers disallow-latest-tag/validate-image-tag)
mkdir -p target/demo
cat > "$risky" <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: risky
spec:
  # Never scheduled: only admission matters here, and an image the sandbox
  # cannot pull would open a repair case.
  schedulingGates:
  - name: demo.aiops-operator.dev/admission-only
  containers:
  - name: app
    image: nginx:latest
    securityContext:
      privileged: true
EOF

# Creates the risky Pod, passing on extra flags (--dry-run=server). Sets
# $reply to kubectl's output, warnings included, and $admitted to 1 or 0.
create_risky() {
  if reply=$(kubectl -n "$ns" create -f "$risky" "$@" 2>&1); then admitted=1; else admitted=0; fi
}
reply_names_every_rule() {
  local prefix=$1 rule
  for rule in "${risky_rules[@]}"; do [[ $reply == *"$prefix$rule:"* ]] || return 1; done
}
denied_naming_every_rule() {
  ((admitted == 0)) && [[ $reply == *'admission webhook "validate.aiops-operator.dev" denied the request'* ]] &&
    reply_names_every_rule "- "
}
admitted_with_audit_warnings() { ((admitted == 1)) && reply_names_every_rule "Warning: [Audit] "; }
# A dry run passes the whole admission chain, but the webhook records no
# Event or report for it (sideEffects: NoneOnDryRun), so it can probe freely.
dry_run_denied() { create_risky --dry-run=server && denied_naming_every_rule; }
dry_run_audited() { create_risky --dry-run=server && admitted_with_audit_warnings; }
# One Event naming every audited rule (the recorder folds Events with the
# same reason on the same object into a series, so the webhook writes one).
warning_event_on_pod() {
  reply=$(kubectl -n "$ns" get events -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message \
    --field-selector involvedObject.kind=Pod,involvedObject.name=risky,type=Warning,reason=PolicyViolation)
  reply_names_every_rule "[Audit] "
}
report_fails_every_rule() {
  report=$(kubectl -n "$ns" get policyreport -o jsonpath='{.items[?(@.scope.name=="risky")].metadata.name}')
  reply="no PolicyReport for Pod risky yet"
  [[ -n $report ]] || return 1
  reply=$(kubectl -n "$ns" get policyreport "$report" \
    -o jsonpath='{range .results[*]}{.policy}/{.rule}: {.result}{"\n"}{end}')
  local rule
  for rule in "${risky_rules[@]}"; do [[ $reply == *"$rule: fail"* ]] || return 1; done
}
operator_pid() { cat target/operator/demo-operator/pid; }

prevention_start=$EPOCHREALTIME
say "Prevention (admission mode from the ConfigMap: $(kubectl -n aiops-system get configmap aiops-operator-config -o jsonpath='{.data.mode}'))"
say "P1. The registered ValidatingWebhookConfiguration"
echo "+ kubectl get validatingwebhookconfiguration aiops-operator-validating -o jsonpath=..."
kubectl get validatingwebhookconfiguration aiops-operator-validating -o jsonpath='{range .webhooks[*]}webhook        {.name} -> {.clientConfig.url}
failurePolicy  {.failurePolicy} (timeout {.timeoutSeconds} s, sideEffects {.sideEffects})
namespaces     {range .namespaceSelector.matchExpressions[*]}{.key} {.operator} {.values}{end}
{range .rules[*]}rule           {.operations} {.apiGroups}/{.apiVersions} {.resources}
{end}{end}'
echo "(manifests/webhook-configurations.yaml ships failurePolicy Fail for Enforce; this local install registers Ignore)"

say "P2. Enforce: a privileged Pod with a :latest image is denied, every violated rule listed"
echo "+ cat $risky"
cat "$risky"
within 20 "the webhook denies the risky Pod in Enforce, naming ${risky_rules[*]}" dry_run_denied
echo "+ kubectl -n $ns create -f $risky"
create_risky
echo "$reply"
denied_naming_every_rule || fail "the risky Pod was not denied in Enforce with every violated rule listed"

say "P3. Audit by a ConfigMap patch, no restart: the same Pod is admitted"
pid=$(operator_pid)
switched=$EPOCHREALTIME
# policyModes pins disallow-latest-tag to Enforce and wins over mode, so
# Audit for every policy clears it. Audit also turns the policy scan's
# proposals on by default; the repair part shows them later (step 6).
set_modes '{"data":{"mode":"Audit","policyModes":null,"remediate.policyViolations":"off"}}'
within 10 "the switch to Audit takes effect" dry_run_audited
[[ $(operator_pid) == "$pid" ]] || fail "the operator restarted during the switch to Audit"
echo "(Audit in force $(seconds_since "$switched") s after the patch; the same operator process, pid $pid)"
echo "+ kubectl -n $ns create -f $risky"
create_risky
echo "$reply"
admitted_with_audit_warnings || fail "the risky Pod was not admitted with an [Audit] warning for each rule"
kubectl -n "$ns" get pod risky
say "   A Warning Event on the Pod"
within 10 "a PolicyViolation Warning Event on Pod risky naming every audited rule" warning_event_on_pod
echo "+ kubectl -n $ns get events --field-selector involvedObject.kind=Pod,involvedObject.name=risky,type=Warning,reason=PolicyViolation -o custom-columns=..."
echo "$reply"
say "   A PolicyReport result, per violated rule"
within 10 "a PolicyReport with a fail result for each rule" report_fails_every_rule
echo "+ kubectl -n $ns get policyreport"
kubectl -n "$ns" get policyreport
echo "+ kubectl -n $ns get policyreport $report -o yaml   (excerpt: the first result, the summary)"
# kubectl prints keys sorted, so results come before summary.
kubectl -n "$ns" get policyreport "$report" -o yaml | awk '
  /^[a-z]/ { section = $1 }
  section == "results:" && /^- / && ++results == 2 { print "- ...  (one result per violated rule)" }
  section == "summary:" || (section == "results:" && results < 2) { print }'

say "P4. Back to Enforce; the Pod is deleted"
switched=$EPOCHREALTIME
set_modes '{"data":{"mode":"Enforce","policyModes":"disallow-latest-tag: Enforce\n","remediate.policyViolations":null}}'
within 10 "the switch back to Enforce takes effect" dry_run_denied
echo "(Enforce in force $(seconds_since "$switched") s after the patch)"
echo "+ kubectl -n $ns delete pod risky --wait"
kubectl -n "$ns" delete pod risky --wait=true
# Reports are kept per object and outlive it; the demo removes its own.
kubectl -n "$ns" delete policyreport "$report" >/dev/null
[[ -z $(kubectl -n "$ns" get pods -o name) ]] || fail "pods are left in namespace $ns"
[[ $(operator_pid) == "$pid" ]] || fail "the operator restarted during the switch back to Enforce"
echo "prevention part: $(seconds_since "$prevention_start") s"

say "Repair"

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
case ${DEMO_LLM:-ollama} in
  ollama)
    say "   Local model server (Ollama built here, Qwen2.5-Coder-0.5B Q4_K_M, sha256-verified)"
    llm_url=$(bash tests/ollama/server.sh up qwen | tail -1)
    llm_provider=ollama
    llm_model=$(sed -n 's/^OLLAMA_MODEL=//p' target/ollama/env)
    ;;
  llamacpp)
    say "   Local model server (xllamacpp, Qwen2.5-Coder-0.5B Q4_K_M, sha256-verified)"
    llm_url=$(bash tests/llm/server.sh up qwen | tail -1)
    llm_provider=openai
    llm_model=qwen2.5-coder-0.5b
    ;;
  *) fail "DEMO_LLM must be ollama or llamacpp, not '$DEMO_LLM'" ;;
esac
echo "model server: $llm_url"
bash tests/operator/local.sh stop demo-operator
port=$(AIOPS_BIN=$PWD/target/release/aiops-operator AIOPS_LLM_URL=$llm_url \
  AIOPS_LLM_PROVIDER=$llm_provider AIOPS_LLM_MODEL=$llm_model \
  bash tests/operator/local.sh start demo-operator)
echo "operator restarted with the $llm_provider provider -> $llm_url ($llm_model)"
model_start=$EPOCHREALTIME
kubectl -n "$ns" create deployment api --image=ngnix:1.25.5 --replicas=2
for _ in $(seq 1 240); do
  phase=$(kubectl -n "$ns" get rem -l aiops-operator.dev/workload-uid="$(kubectl -n "$ns" get deploy api -o jsonpath='{.metadata.uid}')" \
    -o jsonpath='{.items[0].status.phase}' 2>/dev/null || true)
  [[ $phase == Proposed || $phase == Failed ]] && break
  sleep 1
done
rem2=$(kubectl -n "$ns" get rem -l aiops-operator.dev/workload-uid="$(kubectl -n "$ns" get deploy api -o jsonpath='{.metadata.uid}')" -o jsonpath='{.items[0].metadata.name}')
kubectl -n "$ns" get rem
# The model step must really have gone through the chosen route: a proposal
# from another source (or none, after a failed call) is a failed demo, not a
# quieter one.
source=$(kubectl -n "$ns" get rem "$rem2" -o jsonpath='{.status.proposal.source}')
if [[ $source != "$llm_provider:$llm_model" ]]; then
  kubectl -n "$ns" get rem "$rem2" -o jsonpath='{.status.message}{"\n"}' >&2 || true
  fail "the proposal for api came from '${source:-nowhere}', not $llm_provider:$llm_model"
fi
echo "proposal from $source after $(seconds_since "$model_start") s (the Deployment's creation to phase $phase)"
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

say "6. From violation to fix: Audit admits nginx:latest, the policy scan proposes pinning it"
violation_start=$EPOCHREALTIME
set_modes '{"data":{"mode":"Audit","policyModes":null}}'
within 10 "the switch to Audit takes effect" dry_run_audited
echo "+ kubectl -n $ns create deployment legacy --image=nginx:latest --replicas=2"
kubectl -n "$ns" create deployment legacy --image=nginx:latest --replicas=2
kubectl -n "$ns" rollout status deployment/legacy --timeout=90s
kubectl -n "$ns" get pods -l app=legacy -o custom-columns=POD:.metadata.name,IMAGE:.spec.containers[0].image,IMAGE_ID:.status.containerStatuses[0].imageID
# The scan runs on start, on every policy or ConfigMap change and every
# --scan-interval (10 min): saying `propose` explicitly (the default in
# Audit) is a change, so it runs now.
set_modes '{"data":{"remediate.policyViolations":"propose"}}'
legacy_uid=$(kubectl -n "$ns" get deployment legacy -o jsonpath='{.metadata.uid}')
legacy_phase() {
  phase=$(kubectl -n "$ns" get rem -l aiops-operator.dev/workload-uid="$legacy_uid" \
    -o jsonpath='{.items[0].status.phase}' 2>/dev/null || true)
  reply="phase ${phase:-none}"
  [[ $phase == "$1" ]]
}
legacy_report() {
  reply=$(kubectl -n "$ns" get policyreport aiops-deployment-legacy \
    -o jsonpath='{range .results[*]}{.policy}/{.rule}: {.result}{"\n"}{end}' 2>&1) || return 1
  [[ $reply == *"disallow-latest-tag/autogen-validate-image-tag: fail"* ]]
}
no_legacy_report() {
  reply=$(kubectl -n "$ns" get policyreport aiops-deployment-legacy -o name 2>&1 || true)
  [[ -z $reply || $reply == *NotFound* ]]
}
within 60 "a PolicyReport result for Deployment legacy" legacy_report
echo "+ kubectl -n $ns get policyreport aiops-deployment-legacy -o jsonpath=..."
echo "$reply"
within 90 "a proposed policy fix for Deployment legacy" legacy_phase Proposed
rem3=$(kubectl -n "$ns" get rem -l aiops-operator.dev/workload-uid="$legacy_uid" -o jsonpath='{.items[0].metadata.name}')
kubectl -n "$ns" get rem -o wide
say "   kubectl aiops show $rem3"
target/release/kubectl-aiops -n "$ns" show "$rem3"
[[ $(kubectl -n "$ns" get rem "$rem3" -o jsonpath='{.status.proposal.class}') == PolicyFix:disallow-latest-tag ]] ||
  fail "the proposal for legacy is not a disallow-latest-tag fix"
say "   Approve it with plain kubectl"
echo "+ kubectl -n $ns patch rem $rem3 --type=merge -p '{\"spec\":{\"approved\":true}}'"
kubectl -n "$ns" patch rem "$rem3" --type=merge -p '{"spec":{"approved":true}}'
within 180 "the policy fix is applied and verified" legacy_phase Verified
kubectl -n "$ns" get rem "$rem3"
kubectl -n "$ns" get deployment legacy -o jsonpath='image now: {.spec.template.spec.containers[0].image}{"\n"}'
say "   Back to Enforce: that change runs the scan, which finds legacy passing and drops its report"
set_modes '{"data":{"mode":"Enforce","policyModes":"disallow-latest-tag: Enforce\n","remediate.policyViolations":null}}'
within 30 "the PolicyReport of Deployment legacy is gone" no_legacy_report
echo "+ kubectl -n $ns get policyreport"
kubectl -n "$ns" get policyreport 2>&1
echo "violation-to-fix part: $(seconds_since "$violation_start") s"

say "Done in $(seconds_since "$demo_start") s. The sandbox keeps running (make cluster-down stops it); make run starts the operator in the foreground."
