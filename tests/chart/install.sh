#!/usr/bin/env bash
# Both install routes into the running sandbox (make cluster-up), each
# removed again afterwards:
#   1. `make deploy IMG=…`: the Deployment runs IMG; `make undeploy` removes it;
#   2. `helm install` of charts/aiops-operator: the CRDs are established, the
#      ServiceAccount holds the permissions the operator uses (checked by the
#      API server's own authorizer), the ConfigMap carries the values, the
#      webhooks call the chart's Service; `helm uninstall` leaves no webhook
#      configuration behind (a leftover Fail webhook blocks a cluster).
# The sandbox has no container runtime, so nothing here waits for the pods.
# Whatever tests/operator/local.sh installed is removed first: Helm will not
# adopt objects it did not create.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ns=aiops-system
fail() { echo "chart install: FAIL: $*" >&2; exit 1; }
pass() { echo "chart install: ok: $*"; }

[[ -f $repo/target/sandbox/kubeconfig ]] || fail "the sandbox is not running (make cluster-up)"
helm=$(bash "$repo/hack/helm-build.sh")
kubectl=("$(cat "$repo/target/sandbox/bin-dir")/kubectl" --kubeconfig "$repo/target/sandbox/kubeconfig")
k() { "${kubectl[@]}" "$@"; }
export KUBECONFIG="$repo/target/sandbox/kubeconfig"

webhook_configs() {
  { k get validatingwebhookconfigurations -o name; k get mutatingwebhookconfigurations -o name; } \
    | grep -E '/aiops-operator-(validating|mutating|approval)$' || true
}

bash "$repo/tests/operator/local.sh" stop-all >/dev/null
KUBECTL="${kubectl[*]}" bash "$repo/hack/deploy.sh" delete >/dev/null
[[ -z $(webhook_configs) ]] || fail "webhook configurations left before the test: $(webhook_configs)"

# 1. make deploy / make undeploy
img=registry.example.test/team/aiops-operator:v9.9.9
make -s -C "$repo" deploy IMG="$img" KUBECTL="${kubectl[*]}" >/dev/null
got=$(k -n "$ns" get deployment aiops-operator -o jsonpath='{.spec.template.spec.containers[0].image}')
[[ $got == "$img" ]] || fail "make deploy: the Deployment runs $got, expected $img"
pass "make deploy IMG=$img: the Deployment runs it"
make -s -C "$repo" undeploy KUBECTL="${kubectl[*]}" >/dev/null
[[ -z $(webhook_configs) ]] || fail "make undeploy left $(webhook_configs)"
k get namespace "$ns" >/dev/null 2>&1 && fail "make undeploy left the namespace $ns"
pass "make undeploy removed the namespace and the webhook configurations"

# 2. helm install / helm uninstall
start=$(date +%s%N)
"$helm" install aiops-operator "$repo/charts/aiops-operator" --namespace "$ns" --create-namespace >/dev/null
echo "chart install: helm install took $(( ($(date +%s%N) - start) / 1000000 )) ms"
cleanup() { "$helm" uninstall aiops-operator --namespace "$ns" >/dev/null 2>&1 || true; }
trap cleanup EXIT
k wait --for condition=established --timeout=30s \
  crd/remediations.aiops-operator.dev crd/policyreports.wgpolicyk8s.io >/dev/null
pass "CRDs established"
[[ $(k -n "$ns" get configmap aiops-operator-config -o jsonpath='{.data.mode}') == Policy ]] \
  || fail "the ConfigMap's mode is not Policy"
[[ $(k -n "$ns" get configmap aiops-operator-policies -o go-template='{{len .data}}') -ge 12 ]] \
  || fail "the policies ConfigMap lacks the baseline set"
pass "ConfigMaps: mode Policy, the baseline policies"
sa=system:serviceaccount:$ns:aiops-operator
# (can-i warns that cluster-scoped resources ignore its namespace; noise.)
can() { k auth can-i --as "$sa" "$@" >/dev/null 2>&1 || fail "the ServiceAccount cannot $*"; }
cannot() { if k auth can-i --as "$sa" "$@" >/dev/null 2>&1; then fail "the ServiceAccount can $*"; fi; }
can patch validatingwebhookconfigurations/aiops-operator-validating
can patch mutatingwebhookconfigurations/aiops-operator-approval
can create remediations.aiops-operator.dev -n default
can patch deployments.apps -n default
can update leases.coordination.k8s.io -n "$ns"
can watch configmaps -n "$ns"
can update secrets/aiops-operator-webhook-certs -n "$ns"
can watch secrets/aiops-operator-webhook-certs -n "$ns"
can create secrets -n "$ns"
cannot get secrets/someone-elses -n "$ns"
cannot patch validatingwebhookconfigurations/someone-elses
cannot delete deployments.apps -n default
pass "RBAC: the ServiceAccount may do what the operator does, and no more of these"
for kind in validatingwebhookconfiguration/aiops-operator-validating mutatingwebhookconfiguration/aiops-operator-mutating mutatingwebhookconfiguration/aiops-operator-approval; do
  svc=$(k get "$kind" -o jsonpath='{.webhooks[0].clientConfig.service.namespace}/{.webhooks[0].clientConfig.service.name}:{.webhooks[0].clientConfig.service.port}')
  [[ $svc == "$ns/aiops-operator-webhook:443" ]] || fail "$kind calls $svc"
done
k -n "$ns" get service aiops-operator-webhook >/dev/null
k -n "$ns" get poddisruptionbudget aiops-operator >/dev/null
pass "the three webhooks call the Service $ns/aiops-operator-webhook:443; PDB present"
[[ $(k -n "$ns" get deployment aiops-operator -o jsonpath='{.spec.replicas}') == 2 ]] || fail "replicas"

trap - EXIT
"$helm" uninstall aiops-operator --namespace "$ns" >/dev/null
[[ -z $(webhook_configs) ]] || fail "helm uninstall left $(webhook_configs)"
[[ -z $("$helm" list --namespace "$ns" -q) ]] || fail "the release is still listed"
k delete namespace "$ns" --wait --timeout=60s >/dev/null
pass "helm uninstall left no webhook configuration"
