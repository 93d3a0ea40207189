#!/usr/bin/env bash
# Runs aiops-operator as a local process against the sandbox cluster (which
# has no container runtime), installed the way manifests/ installs it: the
# CRDs, RBAC, the ServiceAccount (the operator runs with its token, so RBAC
# is exercised for real), the admission ConfigMap, and webhook
# configurations pointing at https://127.0.0.1:<port> with the CA bundle.
#
#   local.sh run [NAME]      install, then run in the foreground (make run)
#   local.sh start [NAME]    install, then run in the background; prints the port
#   local.sh stop [NAME]     stop a background replica (SIGTERM, then SIGKILL)
#   local.sh stop-all        stop every background replica
#   local.sh register NAME   point the webhook configurations at replica NAME
#                            (after the replica they pointed at went away)
#   local.sh uninstall       remove the webhook configurations (fail-closed
#                            approval would otherwise block Remediation edits)
#
# Environment: AIOPS_BIN (binary; default target/release/aiops-operator),
# AIOPS_MODE (admission mode for the ConfigMap; default Policy),
# AIOPS_LLM_URL / AIOPS_LLM_MODEL (model proposals from an OpenAI-compatible
# server, e.g. the one `make llm-up` starts; unset: rules only),
# AIOPS_LLM_PROVIDER=ollama (the server at AIOPS_LLM_URL is Ollama, e.g. the
# one `make ollama-up` starts; default openai),
# AIOPS_LLM_ALWAYS=true (ask the model even when the rules have a fix),
# AIOPS_WEBHOOK_NAMESPACE_LABEL (only namespaces with this label set to
# "true" go through the webhooks; for tests), AIOPS_OPERATOR_ARGS (extra
# flags for `run`), AIOPS_REGISTER_WEBHOOKS=0 (a second replica that must
# not re-point the webhooks).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
state="$repo/target/operator"
ns=aiops-system
cmd=${1:-run}
name=${2:-operator-0}

log() { echo "operator: $*" >&2; }
die() { echo "operator: error: $*" >&2; exit 1; }

sandbox_kubectl() {
  "$(cat "$repo/target/sandbox/bin-dir")/kubectl" --kubeconfig "$repo/target/sandbox/kubeconfig" "$@"
}

stop_replica() {
  local pidfile="$state/$1/pid"
  [[ -f $pidfile ]] || return 0
  local pid; pid=$(cat "$pidfile")
  if [[ -d /proc/$pid ]] && grep -q aiops-operator "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
    if [[ -d /proc/$pid ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$pidfile"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

install() {
  bash "$repo/tests/sandbox/cluster.sh" up
  local bin=$1
  mkdir -p "$state"
  sandbox_kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $ns}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: aiops-operator, namespace: $ns}
EOF
  for f in crd.yaml policyreport-crd.yaml admission-rbac.yaml remediation-rbac.yaml; do
    sandbox_kubectl apply -f "$repo/manifests/$f" >/dev/null
  done
  sandbox_kubectl wait --for condition=established --timeout=30s crd/remediations.aiops-operator.dev >/dev/null
  sed "s/^  mode: Policy$/  mode: ${AIOPS_MODE:-Policy}/" "$repo/manifests/admission-config.yaml" \
    | sandbox_kubectl apply -f - >/dev/null
  # Model proposals: the local server when AIOPS_LLM_URL is set (make llm-up
  # or make ollama-up), rules only otherwise. Read by the operator at start.
  local llm provider=${AIOPS_LLM_PROVIDER:-openai}
  case $provider in
    openai|ollama) ;;
    *) echo "local.sh: AIOPS_LLM_PROVIDER must be openai or ollama, not '$provider'" >&2; exit 1 ;;
  esac
  if [[ -n ${AIOPS_LLM_URL:-} ]]; then
    llm="{\"llm.provider\":\"$provider\",\"llm.url\":\"$AIOPS_LLM_URL\",\"llm.model\":\"${AIOPS_LLM_MODEL:-local}\",\"llm.timeoutSeconds\":\"180\",\"llm.always\":\"${AIOPS_LLM_ALWAYS:-false}\"}"
  else
    llm='{"llm.provider":"none","llm.always":"false"}'
  fi
  sandbox_kubectl -n "$ns" patch configmap aiops-operator-config --type merge -p "{\"data\":$llm}" >/dev/null
  if [[ ! -f $state/certs/tls.crt ]]; then
    "$bin" certs --out "$state/certs" --ip 127.0.0.1 --dns localhost >/dev/null
  fi
  # The operator's own identity: a token of its ServiceAccount.
  local token; token=$(sandbox_kubectl -n "$ns" create token aiops-operator --duration 24h)
  local server; server=$(sandbox_kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  cat > "$state/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster: {server: "$server", certificate-authority: "$repo/target/sandbox/pki/ca.crt"}
users:
- name: aiops-operator
  user: {token: "$token"}
contexts:
- name: operator
  context: {cluster: sandbox, user: aiops-operator, namespace: $ns}
current-context: operator
EOF
}

register_webhooks() {
  local port=$1 ca; ca=$(base64 -w0 < "$state/certs/ca.crt")
  local selector
  if [[ -n ${AIOPS_WEBHOOK_NAMESPACE_LABEL:-} ]]; then
    selector="matchLabels: {\"${AIOPS_WEBHOOK_NAMESPACE_LABEL}\": \"true\"}"
  else
    selector='matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, kube-node-lease, aiops-system]}]'
  fi
  sandbox_kubectl apply -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: aiops-operator-validating}
webhooks:
- name: validate.aiops-operator.dev
  admissionReviewVersions: [v1]
  clientConfig: {url: "https://127.0.0.1:$port/validate", caBundle: "$ca"}
  failurePolicy: Ignore
  sideEffects: NoneOnDryRun
  timeoutSeconds: 5
  namespaceSelector: {$selector}
  rules:
  - {apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods], scope: Namespaced}
  - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments, statefulsets, daemonsets], scope: Namespaced}
  - {apiGroups: [batch], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [jobs, cronjobs], scope: Namespaced}
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: aiops-operator-approval}
webhooks:
- name: approval.aiops-operator.dev
  admissionReviewVersions: [v1]
  clientConfig: {url: "https://127.0.0.1:$port/remediations", caBundle: "$ca"}
  failurePolicy: Fail
  sideEffects: None
  timeoutSeconds: 5
  namespaceSelector: {$selector}
  rules:
  - {apiGroups: [aiops-operator.dev], apiVersions: [v1alpha1], operations: [CREATE, UPDATE], resources: [remediations], scope: Namespaced}
EOF
}

start_replica() {
  local foreground=$1
  local bin=${AIOPS_BIN:-$repo/target/release/aiops-operator}
  [[ -x $bin ]] || die "no operator binary at $bin (make build)"
  install "$bin"
  stop_replica "$name"
  local port; port=$(free_port)
  mkdir -p "$state/$name"
  local args=(run --webhook-listen "127.0.0.1:$port"
    --webhook-tls-cert "$state/certs/tls.crt" --webhook-tls-key "$state/certs/tls.key"
    --operator-namespace "$ns" --policies-dir "$repo/policies" --pod-name "$name")
  # The API server's admission policies are cluster-wide, whatever
  # namespaces the webhooks are registered for: tests sharing the sandbox
  # set AIOPS_ADMISSION_BACKEND=webhook.
  if [[ -n ${AIOPS_ADMISSION_BACKEND:-} ]]; then args+=(--admission-backend "$AIOPS_ADMISSION_BACKEND"); fi
  # shellcheck disable=SC2206
  args+=(${AIOPS_OPERATOR_ARGS:-})
  echo "$port" > "$state/$name/port"
  if [[ ${AIOPS_REGISTER_WEBHOOKS:-1} == 1 ]]; then register_webhooks "$port"; fi
  if [[ $foreground == 1 ]]; then
    log "running $name on https://127.0.0.1:$port (Ctrl-C to stop)"
    KUBECONFIG="$state/kubeconfig" exec "$bin" "${args[@]}"
  fi
  KUBECONFIG="$state/kubeconfig" setsid "$bin" "${args[@]}" > "$state/$name/log" 2>&1 < /dev/null &
  echo $! > "$state/$name/pid"
  for _ in $(seq 1 150); do
    if curl -skf "https://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
      echo "$port"
      return 0
    fi
    [[ -d /proc/$(cat "$state/$name/pid") ]] || die "$name exited; see $state/$name/log"
    sleep 0.2
  done
  die "$name not ready; see $state/$name/log"
}

case $cmd in
  run) start_replica 1 ;;
  start) start_replica 0 ;;
  stop) stop_replica "$name" ;;
  register)
    [[ -f $state/$name/port ]] || die "no replica $name"
    register_webhooks "$(cat "$state/$name/port")"
    ;;
  stop-all)
    for dir in "$state"/*/; do
      if [[ -f $dir/pid ]]; then stop_replica "$(basename "$dir")"; fi
    done
    ;;
  uninstall)
    sandbox_kubectl delete validatingwebhookconfiguration aiops-operator-validating --ignore-not-found >/dev/null
    sandbox_kubectl delete mutatingwebhookconfiguration aiops-operator-approval --ignore-not-found >/dev/null
    ;;
  *) echo "usage: $0 {run|start|stop|stop-all|uninstall} [NAME]" >&2; exit 2 ;;
esac
