#!/usr/bin/env bash
# Kyverno's admission controller as a backend of the end-to-end admission
# bench (tests/bench/admission_e2e.rs, BENCH_E2E_BACKENDS=kyverno).
#
#   kyverno.sh build          build the pinned cmd/kyverno from the Go module
#                             proxy into a cache outside the checkout; prints
#                             the cache folder (bin/kyverno, crds/)
#   kyverno.sh run NS LABEL WEBHOOK_PORT METRICS_PORT
#                             install the CRDs (they stay), create namespace NS
#                             with Kyverno's config, then become the admission
#                             controller, out of cluster, serving on
#                             127.0.0.1:WEBHOOK_PORT; its resource webhooks
#                             match only namespaces labelled LABEL (key=value)
#   kyverno.sh down NS        remove what `run` registered: Kyverno's webhook
#                             configurations, the ClusterPolicies labelled
#                             aiops-operator.dev/bench-kyverno, namespace NS
#                             (stop the process first, or it registers them again)
#
# `run` and `down` talk to the cluster of $KUBECONFIG with $KUBECTL.
# Progress goes to stderr.
set -euo pipefail

KYVERNO_VERSION=v1.19.1
MODULE=github.com/kyverno/kyverno

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${AIOPS_KYVERNO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aiops-operator/kyverno}

# The module has a replace directive, which `go install pkg@version` refuses,
# so the build runs inside the downloaded module itself: its own go.mod and
# go.sum decide every dependency, as upstream's release build does.
build_into() {
  local out=$1 scratch=$2
  export GOCACHE="$scratch/build" GOMODCACHE="$scratch/mod" GOFLAGS="-modcacherw"
  local src
  src=$(go mod download -json "$MODULE@$KYVERNO_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d $src ]] || { echo "kyverno: no module folder for $MODULE@$KYVERNO_VERSION" >&2; return 1; }
  # The 2-core machine is shared with other builders: lowest priority.
  (cd "$src" && CGO_ENABLED=0 nice -n 19 go build -trimpath \
     -ldflags "-s -w -X $MODULE/pkg/version.BuildVersion=$KYVERNO_VERSION" \
     -o "$out/bin/kyverno" ./cmd/kyverno)
  # The CRDs of the same version, kept beside the binary (the module cache
  # is scratch and goes away).
  mkdir -p "$out/crds"
  cp "$src"/config/crds/kyverno/*.yaml "$src"/config/crds/policies.kyverno.io/*.yaml \
     "$src"/config/crds/policyreport/*.yaml "$src"/config/crds/reports/*.yaml "$out/crds/"
  chmod -R u+w "$out/crds"
}

# The cache key covers the pin, the build recipe above and the Go version, not
# the rest of this file: changing how Kyverno runs does not rebuild it.
cache_dir() {
  local key
  key=$( { echo "$KYVERNO_VERSION"; declare -f build_into; go env GOVERSION; } | sha256sum | cut -c1-16)
  echo "$cache_root/$key"
}

cmd_build() {
  command -v go >/dev/null || { echo "kyverno: the Go toolchain (go) is required" >&2; exit 1; }
  local dir
  dir=$(cache_dir)
  if [[ -f "$dir/.complete" ]]; then
    echo "$dir"
    return
  fi
  mkdir -p "$dir/bin"
  scratch="$dir.go-scratch"
  trap 'rm -rf "$scratch"' EXIT
  echo "kyverno: building $MODULE $KYVERNO_VERSION cmd/kyverno into $dir (a cold build takes 20 minutes or more)" >&2
  local start
  start=$(date +%s)
  build_into "$dir" "$scratch"
  echo "kyverno: built in $(( $(date +%s) - start ))s; Go caches used $(du -sh "$scratch" | cut -f1), now removed" >&2
  echo "$(( $(date +%s) - start ))" > "$dir/.build-seconds"
  touch "$dir/.complete"
  echo "$dir"
}

kubectl() { "${KUBECTL:?KUBECTL: the sandbox kubectl}" --kubeconfig "${KUBECONFIG:?}" "$@"; }

cmd_run() {
  local ns=$1 label=$2 webhook_port=$3 metrics_port=$4 dir
  dir=$(cache_dir)
  [[ -f "$dir/.complete" ]] || { echo "kyverno: not built: run $0 build" >&2; exit 1; }
  # Server-side: the policy CRDs are too large for the last-applied annotation.
  kubectl apply --server-side --force-conflicts -f "$dir/crds" >/dev/null
  kubectl wait --for=condition=Established --timeout=60s -f "$dir/crds" >/dev/null
  kubectl create namespace "$ns" >/dev/null
  # Kyverno's webhooks are cluster-wide: this selector keeps every other
  # namespace of the shared sandbox out of them.
  local selector
  selector=$(printf '{"namespaceSelector":{"matchLabels":{"%s":"%s"}}}' "${label%%=*}" "${label#*=}")
  # DELETEs are left out as the webhook backend's registration leaves them
  # out (the 12 policies skip them anyway): otherwise emptying the bench
  # namespace between phases sends every pod's DELETE through Kyverno, past
  # the API server's 60 s limit on one deletecollection.
  local conditions='[{"name":"aiops-bench-no-deletes","expression":"request.operation != '"'DELETE'"'"}]'
  kubectl -n "$ns" create configmap kyverno --from-literal=webhooks="$selector" \
    --from-literal=matchConditions="$conditions" >/dev/null
  kubectl -n "$ns" create configmap kyverno-metrics >/dev/null
  echo "kyverno: starting $KYVERNO_VERSION in namespace $ns on 127.0.0.1:$webhook_port" >&2
  # The names below are the ones Kyverno's own debugging setup uses; with
  # --serverIP it registers its webhooks by URL instead of by Service.
  # Admission reports are off: no reports controller runs to aggregate them,
  # and each would be a second API write per admitted pod.
  KYVERNO_NAMESPACE=$ns KYVERNO_SERVICEACCOUNT_NAME=kyverno-admission-controller \
  KYVERNO_DEPLOYMENT=kyverno-admission-controller KYVERNO_POD_NAME=kyverno-local \
  INIT_CONFIG=kyverno METRICS_CONFIG=kyverno-metrics \
  exec "$dir/bin/kyverno" \
    --kubeconfig="$KUBECONFIG" \
    --serverIP="127.0.0.1:$webhook_port" \
    --webhookServerHost=127.0.0.1 --webhookServerPort="$webhook_port" \
    --metricsHost=127.0.0.1 --metricsPort="$metrics_port" \
    --controllerRuntimeMetricsAddress=0 \
    --backgroundServiceAccountName="system:serviceaccount:$ns:kyverno-background-controller" \
    --reportsServiceAccountName="system:serviceaccount:$ns:kyverno-reports-controller" \
    --caSecretName="kyverno-svc.$ns.svc.kyverno-tls-ca" \
    --tlsSecretName="kyverno-svc.$ns.svc.kyverno-tls-pair" \
    --admissionReports=false \
    --disableLogColor
}

cmd_down() {
  local ns=$1
  for kind in validatingwebhookconfiguration mutatingwebhookconfiguration; do
    kubectl delete "$kind" -l webhook.kyverno.io/managed-by=kyverno --ignore-not-found >/dev/null
  done
  kubectl delete clusterpolicy -l aiops-operator.dev/bench-kyverno --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete namespace "$ns" --ignore-not-found --wait=false >/dev/null
}

case ${1:-} in
  build) cmd_build ;;
  run) [[ $# -eq 5 ]] || { echo "usage: $0 run NS LABEL WEBHOOK_PORT METRICS_PORT" >&2; exit 2; }; cmd_run "$2" "$3" "$4" "$5" ;;
  down) [[ $# -eq 2 ]] || { echo "usage: $0 down NS" >&2; exit 2; }; cmd_down "$2" ;;
  *) echo "usage: $0 build | run NS LABEL WEBHOOK_PORT METRICS_PORT | down NS" >&2; exit 2 ;;
esac
