#!/usr/bin/env bash
# The chart, offline: `helm lint`, `helm template` with default values, the
# drift check against manifests/ (drift.py), and what values change (the
# PrometheusRule and dashboard ConfigMap, off by default, included):
# failurePolicy per mode and override, the release namespace excluded from
# the webhooks, cert-manager's CA injection, the LLM API key from a Secret,
# the copies of the CRDs and policies the chart carries.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
chart="$repo/charts/aiops-operator"
work="$repo/target/chart"
fail() { echo "chart check: FAIL: $*" >&2; exit 1; }
pass() { echo "chart check: ok: $*"; }

helm=$(bash "$repo/hack/helm-build.sh")
kubectl="$(bash "$repo/tests/sandbox/build.sh")/kubectl"
rm -rf "$work"; mkdir -p "$work"

"$helm" lint --strict "$chart" >/dev/null || { "$helm" lint --strict "$chart"; fail "helm lint"; }
pass "helm lint --strict"

# The chart carries copies (Helm reads nothing outside the chart folder).
cmp -s "$chart/crds/remediation-crd.yaml" "$repo/manifests/crd.yaml" \
  || fail "charts/aiops-operator/crds/remediation-crd.yaml differs from manifests/crd.yaml (make manifests)"
cmp -s "$chart/crds/policyreport-crd.yaml" "$repo/manifests/policyreport-crd.yaml" \
  || fail "charts/aiops-operator/crds/policyreport-crd.yaml differs from manifests/ (make manifests)"
# Top-level policies only: policies/examples/ is opt-in and not shipped.
diff <(cd "$repo/policies" && sha256sum -- *.yaml) <(cd "$chart/files/policies" && sha256sum -- *.yaml) >/dev/null \
  || fail "charts/aiops-operator/files/policies differs from policies/*.yaml (make manifests)"
pass "the chart's CRDs and policies are copies of manifests/ and policies/"
cmp -s "$chart/files/prometheus/aiops-operator-rules.yaml" "$repo/deploy/prometheus/aiops-operator-rules.yaml" \
  || fail "charts/aiops-operator/files/prometheus differs from deploy/prometheus/aiops-operator-rules.yaml (make manifests)"
cmp -s "$chart/files/grafana/aiops-operator.json" "$repo/deploy/grafana/aiops-operator.json" \
  || fail "charts/aiops-operator/files/grafana differs from deploy/grafana/aiops-operator.json (make manifests)"
pass "the chart's alert rules and dashboard are copies of deploy/"

# Rendered for the sandbox's Kubernetes (helm template alone assumes an old one).
kube_version=$(sed -n 's/^KUBE_VERSION=//p' "$repo/tests/sandbox/versions.env")
template() { "$helm" template aiops-operator "$chart" --namespace "${NS:-aiops-system}" --kube-version "$kube_version" "$@"; }
template --include-crds > "$work/chart.yaml"
"$kubectl" kustomize "$repo/manifests" > "$work/manifests.yaml"
python3 "$repo/tests/chart/drift.py" "$work/chart.yaml" "$work/manifests.yaml"

# One field of one rendered object, by kind, name and a /-separated path.
field() {
  python3 -c '
import json, sys, yaml
kind, name, path = sys.argv[1:]
for doc in yaml.safe_load_all(sys.stdin):
    if doc and doc["kind"] == kind and doc["metadata"]["name"] == name:
        value = doc
        for part in path.split("/"):
            value = value[int(part)] if isinstance(value, list) else value.get(part)
            if value is None:
                break
        print(json.dumps(value, sort_keys=True))
        break
else:
    sys.exit(f"no {kind} {name}")
' "$1" "$2" "$3"
}
validating() { field ValidatingWebhookConfiguration aiops-operator-validating "$1"; }
expect() { # expect WHAT ACTUAL EXPECTED
  [[ $2 == "$3" ]] || fail "$1: got $2, expected $3"
  pass "$1: $3"
}

expect "default (mode Policy) failurePolicy" "$(template | validating webhooks/0/failurePolicy)" '"Fail"'
expect "mode Audit failurePolicy" "$(template --set admission.mode=Audit --set admission.policyModes=null | validating webhooks/0/failurePolicy)" '"Ignore"'
expect "mode Warn failurePolicy" "$(template --set admission.mode=Warn --set admission.policyModes=null | validating webhooks/0/failurePolicy)" '"Ignore"'
expect "mode Audit with one policy in Enforce" "$(template --set admission.mode=Audit | validating webhooks/0/failurePolicy)" '"Fail"'
expect "mode Enforce failurePolicy" "$(template --set admission.mode=Enforce | validating webhooks/0/failurePolicy)" '"Fail"'
expect "mode Enforce, failurePolicy overridden" "$(template --set admission.mode=Enforce --set webhook.failurePolicy=Ignore | validating webhooks/0/failurePolicy)" '"Ignore"'
if template --set admission.mode=Strict >/dev/null 2>&1; then fail "an unknown mode rendered"; fi
pass "an unknown mode is refused at render time"
expect "excluded namespaces in release namespace ops" \
  "$(NS=ops template | validating webhooks/0/namespaceSelector/matchExpressions/0/values)" \
  '["kube-system", "kube-node-lease", "ops"]'
expect "Service in the webhook clientConfig" "$(NS=ops template | validating webhooks/0/clientConfig/service)" \
  '{"name": "aiops-operator-webhook", "namespace": "ops", "path": "/validate", "port": 443}'
expect "cert-manager CA injection" \
  "$(NS=ops template --set certificates.selfManaged=false --set certificates.certManager.enabled=true | validating metadata/annotations)" \
  '{"cert-manager.io/inject-ca-from": "ops/aiops-operator-webhook"}'
expect "LLM settings in the ConfigMap" \
  "$(template --set llm.provider=ollama --set llm.url=http://ollama.ai.svc:11434 | field ConfigMap aiops-operator-config data/llm.url)" \
  '"http://ollama.ai.svc:11434"'
expect "auto-approval rules in the ConfigMap" \
  "$(template --set 'remediate.autoApprove[0].name=image-typos' --set 'remediate.autoApprove[0].classes[0]=ImageRestore' | field ConfigMap aiops-operator-config data/remediate.autoApprove)" \
  '"- classes:\n  - ImageRestore\n  name: image-typos\n"'
expect "LLM API key from a Secret" \
  "$(template --set llm.apiKeySecret.name=llm-key | field Deployment aiops-operator spec/template/spec/containers/0/env/2)" \
  '{"name": "LLM_API_KEY", "valueFrom": {"secretKeyRef": {"key": "api-key", "name": "llm-key"}}}'
expect "self-managed certificates by default" \
  "$(template | field Deployment aiops-operator spec/template/spec/containers/0/args/1)" '"--webhook-cert-secret=aiops-operator-webhook-certs"'
expect "a pair of your own: the Secret mounted" \
  "$(template --set certificates.selfManaged=false | field Deployment aiops-operator spec/template/spec/volumes/0/secret)" \
  '{"secretName": "aiops-operator-webhook-certs"}'
expect "a pair of your own: its CA published by the operator" \
  "$(template --set certificates.selfManaged=false | field Deployment aiops-operator spec/template/spec/containers/0/args/3)" \
  '"--webhook-ca-bundle=/etc/aiops-operator/webhook-certs/ca.crt"'
expect "ServiceMonitor off by default" "$(template | grep -c '^kind: ServiceMonitor' || true)" 0
expect "no console by default" "$(template | grep -c 'name: aiops-operator-console$' || true)" 0
expect "console on request: the flag" \
  "$(template --set console.enabled=true --set 'console.dnsNames[0]=console.example' | field Deployment aiops-operator spec/template/spec/containers/0/args)" \
  '["run", "--webhook-cert-secret=aiops-operator-webhook-certs", "--webhook-tls-cert=/run/aiops-operator/webhook-certs/tls.crt", "--webhook-tls-key=/run/aiops-operator/webhook-certs/tls.key", "--mutating-webhook-config=aiops-operator-mutating", "--mutating-webhook-config=aiops-operator-approval", "--policies-dir=/etc/aiops-operator/policies", "--console-addr=0.0.0.0:9445", "--webhook-cert-dns=aiops-operator-console.aiops-system.svc", "--webhook-cert-dns=aiops-operator-console.aiops-system.svc.cluster.local", "--webhook-cert-dns=console.example"]'
expect "console on request: the container port" \
  "$(template --set console.enabled=true | field Deployment aiops-operator spec/template/spec/containers/0/ports/1)" \
  '{"containerPort": 9445, "name": "console"}'
expect "console on request: its Service" \
  "$(template --set console.enabled=true | field Service aiops-operator-console spec)" \
  '{"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": "console"}], "selector": {"app.kubernetes.io/name": "aiops-operator"}, "sessionAffinity": "ClientIP"}'
expect "ServiceMonitor on request" "$(template --set serviceMonitor.enabled=true | grep -c '^kind: ServiceMonitor')" 1
expect "PodDisruptionBudget" "$(template | field PodDisruptionBudget aiops-operator spec/minAvailable)" 1
expect "replicas" "$(template | field Deployment aiops-operator spec/replicas)" 2
expect "PrometheusRule off by default" "$(template | grep -c '^kind: PrometheusRule' || true)" 0
# On request: the same groups as deploy/prometheus (templates such as
# {{ $value }} left as they are), and promtool accepts the rendered spec.
template --set prometheusRule.enabled=true --set prometheusRule.labels.release=prom > "$work/rule.yaml"
python3 - "$work/rule.yaml" "$repo/deploy/prometheus/aiops-operator-rules.yaml" "$work/rule-spec.yaml" <<'PY' \
  || fail "the rendered PrometheusRule differs from deploy/prometheus/aiops-operator-rules.yaml"
import sys, yaml
rendered = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "PrometheusRule"]
assert len(rendered) == 1, f"{len(rendered)} PrometheusRules"
rule = rendered[0]
assert rule["metadata"]["labels"]["release"] == "prom", rule["metadata"]["labels"]
assert rule["spec"] == yaml.safe_load(open(sys.argv[2])), "spec differs"
yaml.safe_dump(rule["spec"], open(sys.argv[3], "w"))
PY
"$(bash "$repo/hack/promtool-build.sh")" check rules "$work/rule-spec.yaml" >/dev/null \
  || fail "promtool check rules refuses the rendered PrometheusRule's spec"
pass "PrometheusRule on request: the rules of deploy/prometheus, accepted by promtool"
expect "Grafana dashboard ConfigMap off by default" "$(template | grep -c '^  name: aiops-operator-dashboard' || true)" 0
expect "Grafana dashboard ConfigMap on request: the sidecar's label" \
  "$(template --set grafanaDashboard.enabled=true | field ConfigMap aiops-operator-dashboard metadata/labels/grafana_dashboard)" '"1"'
template --set grafanaDashboard.enabled=true | field ConfigMap aiops-operator-dashboard data/aiops-operator.json \
  | python3 -c 'import json, sys; sys.exit(json.loads(json.load(sys.stdin)) != json.load(open(sys.argv[1])))' \
    "$repo/deploy/grafana/aiops-operator.json" \
  || fail "the dashboard ConfigMap does not hold deploy/grafana/aiops-operator.json"
pass "Grafana dashboard ConfigMap on request: deploy/grafana/aiops-operator.json as it is"
