#!/usr/bin/env bash
# The in-cluster path in the sandbox: the chart installed with its defaults,
# the API server calling the webhook through the chart's Service, the
# operator keeping its own certificates, and `helm uninstall` cleaning up.
#
# The sandbox has no container runtime, so each of the chart's pods is played
# by the real operator process (the static binary of the image) in a network
# namespace this script makes, the way a pod runtime would:
#   - kwok gives each pod of the chart's Deployment a pod IP, and the
#     endpoint controllers put those IPs behind the chart's Service;
#   - per pod, a network namespace with a veth pair holds that pod IP;
#     the host end routes to it (the API server, started with
#     --enable-aggregator-routing, dials the Service's endpoints);
#   - inside it the operator runs with what the kubelet would give it: the
#     Deployment's own args and env, the ServiceAccount token (bound to the
#     pod) and CA at the in-cluster path, KUBERNETES_SERVICE_HOST set to the
#     `kubernetes` Service's cluster IP (service_vip.py plays kube-proxy for
#     it), the policies ConfigMap as its volume, a private /run for the
#     emptyDir, uid 65532;
#   - readiness is real: the Deployment's readinessProbe (/readyz on 8443)
#     is probed at the pod IP before anything is asked of the webhook.
# Nothing leaves the machine: the addresses are the sandbox's pod and service
# ranges, routed only to the namespaces made here.
#
#   in-cluster.sh         the test (about a minute)
#   in-cluster.sh stop    stop what an interrupted run left: its processes,
#                         namespaces and veths
#
# Checked: the Secret and both webhook configurations' caBundle are made by
# the operator; an Enforce policy denies through the Service and a compliant
# Pod is admitted; the Secret deleted while requests flow gives a new CA in
# the configurations and no failed request; `helm uninstall` leaves no webhook
# configuration. Needs root (network namespaces), the sandbox up
# (make cluster-up), Helm (hack/helm-build.sh) and make build-static.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ns=aiops-system
release=aiops-operator
service=aiops-operator-webhook
work="$repo/target/in-cluster"
fail() { echo "in-cluster: FAIL: $*" >&2; exit 1; }
pass() { echo "in-cluster: ok: $*"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# ------------------------------------------------------------------ cleanup
# Only what this script started: processes by their recorded PIDs, the
# namespaces and veths by the names it gives them.
stop_all() {
  local pidfile pid
  for pidfile in "$work"/*.pid; do
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
    if [[ -d /proc/$pid ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$pidfile"
  done
  local netns
  for netns in $(ip netns list 2>/dev/null | awk '/^aiops-pod-/{print $1}'); do
    ip netns delete "$netns" 2>/dev/null || true
  done
  # Deleting a namespace removes its veth pair; this catches a half-made one.
  local link
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '/aiops-h[0-9]/{print $2}' | cut -d@ -f1); do
    ip link delete "$link" 2>/dev/null || true
  done
}
# `in-cluster.sh stop`: what a failed run left (make test's exit trap).
if [[ ${1:-} == stop ]]; then
  stop_all
  exit 0
fi

[[ $(id -u) == 0 ]] || fail "network namespaces need root"
for tool in ip unshare setpriv curl python3; do
  command -v "$tool" >/dev/null || fail "$tool is required"
done
[[ -f $repo/target/sandbox/kubeconfig ]] || fail "the sandbox is not running (make cluster-up)"
bin=${AIOPS_STATIC_BIN:-$repo/target/$(rustc -vV | sed -n 's/^host: //p')/release/aiops-operator}
[[ -x $bin ]] || fail "no static operator binary at $bin (make build-static)"
helm=$(bash "$repo/hack/helm-build.sh")
kubectl=("$(cat "$repo/target/sandbox/bin-dir")/kubectl" --kubeconfig "$repo/target/sandbox/kubeconfig")
k() { "${kubectl[@]}" "$@"; }
export KUBECONFIG="$repo/target/sandbox/kubeconfig"
# shellcheck source=/dev/null
source "$repo/target/sandbox/ports.env"

webhook_configs() {
  { k get validatingwebhookconfigurations -o name; k get mutatingwebhookconfigurations -o name; } \
    | grep -E '/aiops-operator-(validating|mutating|approval)$' || true
}

cleanup() {
  stop_all
  "$helm" uninstall "$release" --namespace "$ns" --wait --timeout 60s >/dev/null 2>&1 || true
  k delete namespace in-cluster-check --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
mkdir -p "$work"
stop_all
bash "$repo/tests/operator/local.sh" stop-all >/dev/null
bash "$repo/tests/operator/local.sh" uninstall >/dev/null
"$helm" uninstall "$release" --namespace "$ns" >/dev/null 2>&1 || true
KUBECTL="${kubectl[*]}" bash "$repo/hack/deploy.sh" delete >/dev/null
k delete namespace "$ns" --ignore-not-found --wait --timeout=60s >/dev/null
[[ -z $(webhook_configs) ]] || fail "webhook configurations left before the test: $(webhook_configs)"
rm -rf "$work"; mkdir -p "$work"
trap cleanup EXIT

# ------------------------------------------------------------------ install
started=$(now_ms)
"$helm" install "$release" "$repo/charts/aiops-operator" --namespace "$ns" --create-namespace >/dev/null
k wait --for condition=established --timeout=30s \
  crd/remediations.aiops-operator.dev crd/policyreports.wgpolicyk8s.io >/dev/null
selector=app.kubernetes.io/name=aiops-operator
replicas=$(k -n "$ns" get deployment aiops-operator -o jsonpath='{.spec.replicas}')
for _ in $(seq 1 120); do
  [[ $(k -n "$ns" get pods -l "$selector" --no-headers 2>/dev/null | wc -l) -ge $replicas ]] && break
  sleep 0.5
done
k -n "$ns" wait --for condition=Ready --timeout=60s pod -l "$selector" >/dev/null \
  || fail "the chart's pods got no pod IP from the sandbox"
mapfile -t pods < <(k -n "$ns" get pods -l "$selector" -o jsonpath='{range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}')
[[ ${#pods[@]} == "$replicas" ]] || fail "expected $replicas pods, got ${#pods[@]}"
pass "helm install: $replicas pods with IPs ($(printf '%s ' "${pods[@]}"))"

# The Service's endpoints, as the API server will read them.
for _ in $(seq 1 60); do
  endpoints=$(k -n "$ns" get endpointslices -l "kubernetes.io/service-name=$service" \
    -o jsonpath='{range .items[*].endpoints[*]}{.addresses[0]}{"\n"}{end}' | sort | tr '\n' ' ')
  [[ $(wc -w <<<"$endpoints") == "$replicas" ]] && break
  sleep 0.5
done
[[ $(wc -w <<<"$endpoints") == "$replicas" ]] || fail "the Service $service has endpoints '$endpoints'"
pass "the Service $service has the endpoints $endpoints"

# ------------------------------------------------- the pods' network and API
vip=$(k -n default get service kubernetes -o jsonpath='{.spec.clusterIP}')
[[ -n $vip ]] || fail "no cluster IP for the kubernetes Service"

# The Deployment's container, as the kubelet would run it.
deployment=$(k -n "$ns" get deployment aiops-operator -o json)
mapfile -t args < <(python3 -c '
import json, sys
c = json.load(sys.stdin)["spec"]["template"]["spec"]["containers"][0]
print("\n".join(c["args"]))' <<<"$deployment")
policies_mount=$(python3 -c '
import json, sys
c = json.load(sys.stdin)["spec"]["template"]["spec"]["containers"][0]
print(next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "policies"))' <<<"$deployment")
# The policies volume is the ConfigMap's data as files.
mkdir -p "$work/policies"
k -n "$ns" get configmap aiops-operator-policies -o json | python3 -c '
import json, os, sys
for name, text in json.load(sys.stdin)["data"].items():
    open(os.path.join(sys.argv[1], name), "w").write(text)' "$work/policies"
# The cluster CA, published into every namespace by the controller manager.
for _ in $(seq 1 60); do
  k -n "$ns" get configmap kube-root-ca.crt -o jsonpath='{.data.ca\.crt}' > "$work/ca.crt" 2>/dev/null && break
  sleep 0.5
done
[[ -s $work/ca.crt ]] || fail "no kube-root-ca.crt ConfigMap in $ns"
# /etc is the host's (only /run is private to the pod), so the policies go
# to the arg's path by rewriting it; every other arg is the chart's.
args=("${args[@]//"$policies_mount"/"$work/policies"}")
chmod -R a+rX "$work"

net_pod() { # net_pod INDEX POD IP
  local i=$1 pod=$2 ip=$3 netns=aiops-pod-$1 host=aiops-h$1
  ip netns add "$netns"
  ip link add "$host" type veth peer name eth0 netns "$netns"
  ip -n "$netns" link set lo up
  ip -n "$netns" addr add "$ip/32" dev eth0
  ip -n "$netns" link set eth0 up
  ip -n "$netns" route add "$vip/32" dev eth0
  ip link set "$host" up
  # The cluster IP lives on the host end of the first pod's veth: reachable
  # from the namespaces, bound to nothing that leaves the machine.
  if [[ $i == 0 ]]; then ip addr add "$vip/32" dev "$host"; fi
  ip route add "$ip/32" dev "$host" src "$vip"
}

run_pod() { # run_pod INDEX POD
  local netns=aiops-pod-$1 pod=$2
  k -n "$ns" create token aiops-operator --bound-object-kind Pod --bound-object-name "$pod" \
    --duration 1h > "$work/$pod.token"
  chmod 0644 "$work/$pod.token"
  # A private /run: the in-cluster ServiceAccount files and the emptyDir.
  setsid ip netns exec "$netns" unshare --mount --propagation private bash -c '
      set -e
      mount -t tmpfs -o mode=0755 tmpfs /run
      sa=/run/secrets/kubernetes.io/serviceaccount
      mkdir -p "$sa" /run/aiops-operator/webhook-certs
      cp "$1" "$sa/token"; cp "$2" "$sa/ca.crt"; printf %s "$3" > "$sa/namespace"
      chown 65532:65532 /run/aiops-operator/webhook-certs
      shift 3
      exec "$@"' _ "$work/$pod.token" "$work/ca.crt" "$ns" \
    setpriv --reuid 65532 --regid 65532 --clear-groups \
    env -i "KUBERNETES_SERVICE_HOST=$vip" KUBERNETES_SERVICE_PORT=443 \
      "POD_NAME=$pod" "POD_NAMESPACE=$ns" HOME=/nonexistent RUST_LOG=info \
    "$bin" "${args[@]}" > "$work/$pod.log" 2>&1 < /dev/null &
  echo $! > "$work/$pod.pid"
}

# The pods' networks first: the relay binds the cluster IP they carry, and
# the operators need the relay from their first request.
i=0
for entry in "${pods[@]}"; do
  read -r pod ip <<<"$entry"
  net_pod "$i" "$pod" "$ip"
  i=$((i + 1))
done
python3 "$repo/tests/chart/service_vip.py" "$vip" 443 "$APISERVER_PORT" > "$work/service-vip.log" 2>&1 &
echo $! > "$work/service-vip.pid"
for _ in $(seq 1 100); do grep -q listening "$work/service-vip.log" && break; sleep 0.1; done
grep -q listening "$work/service-vip.log" || fail "the cluster IP relay did not start: $(cat "$work/service-vip.log")"
i=0
for entry in "${pods[@]}"; do
  read -r pod ip <<<"$entry"
  run_pod "$i" "$pod"
  i=$((i + 1))
done

# The readinessProbe, from outside the pod as the kubelet does.
for entry in "${pods[@]}"; do
  read -r pod ip <<<"$entry"
  ready=""
  for _ in $(seq 1 300); do
    if curl -skf --max-time 2 "https://$ip:8443/readyz" >/dev/null 2>&1; then ready=1; break; fi
    [[ -d /proc/$(cat "$work/$pod.pid") ]] || fail "$pod exited: $(tail -5 "$work/$pod.log")"
    sleep 0.2
  done
  [[ -n $ready ]] || fail "$pod never answered its readinessProbe: $(tail -5 "$work/$pod.log")"
done
pass "both pods ready (readinessProbe /readyz at the pod IPs) $(( $(now_ms) - started )) ms after helm install"

# ----------------------------------------------------------- certificates
secret_ca() {
  k -n "$ns" get secret aiops-operator-webhook-certs -o jsonpath='{.data.ca\.crt}' 2>/dev/null || true
}
ca=$(secret_ca)
[[ -n $ca ]] || fail "the operator stored no serving pair in aiops-operator-webhook-certs"
ca_pem=$(base64 -d <<<"$ca")
# Whether a configuration's caBundle holds a certificate (PEM bodies compared
# without line breaks: the bundle may hold several CAs).
bundle_has() { # bundle_has KIND NAME PEM
  local bundle
  bundle=$(k get "$1" "$2" -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | base64 -d | grep -v -- '-----' | tr -d '\n')
  [[ $bundle == *"$(grep -v -- '-----' <<<"$3" | tr -d '\n')"* ]]
}
for config in validatingwebhookconfiguration/aiops-operator-validating \
  mutatingwebhookconfiguration/aiops-operator-mutating mutatingwebhookconfiguration/aiops-operator-approval; do
  bundle_has "${config%/*}" "${config#*/}" "$ca_pem" || fail "$config does not trust the stored CA"
done
pass "the operator made the Secret and published its CA into the three webhook configurations"

# -------------------------------------------------- admission via the Service
k create namespace in-cluster-check >/dev/null
# With the chart's default mode (Policy), disallow-latest-tag enforces.
latest='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"latest"},"spec":{"containers":[{"name":"app","image":"nginx:latest"}]}}'
pinned='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"pinned"},"spec":{"containers":[{"name":"app","image":"nginx:1.25.5"}]}}'
if out=$(k -n in-cluster-check create --dry-run=server -f - <<<"$latest" 2>&1); then
  fail "a Pod with image nginx:latest was admitted: $out"
fi
# The webhook denies, or the API server through the admission policy the
# operator keeps for the enforced pattern rule (named after its policy).
grep -Eq 'denied the request|ValidatingAdmissionPolicy .* denied request' <<<"$out" \
  && grep -q 'disallow-latest-tag' <<<"$out" \
  || fail "nginx:latest was refused, but not by the operator: $out"
pass "through the Service: nginx:latest denied by disallow-latest-tag"
out=$(k -n in-cluster-check create --dry-run=server -f - <<<"$pinned" 2>&1) \
  || fail "a Pod with a pinned image was refused: $out"
pass "through the Service: nginx:1.25.5 admitted"

# ------------------------------------------------ rotation under requests
# Requests flow the whole time, alternating allowed and denied ones; a call
# that fails for any other reason (webhook unreachable, TLS refused: the
# chart's failurePolicy is Fail) counts as a failure.
admit_loop() {
  local n=0 failed=0 out
  while [[ ! -f $work/stop ]]; do
    n=$((n + 1))
    if ! out=$(k -n in-cluster-check create --dry-run=server -f - <<<"$pinned" 2>&1); then
      failed=$((failed + 1)); echo "pinned: $out" >> "$work/failures"
    fi
    if out=$(k -n in-cluster-check create --dry-run=server -f - <<<"$latest" 2>&1) \
      || ! grep -q 'disallow-latest-tag' <<<"$out"; then
      failed=$((failed + 1)); echo "latest: $out" >> "$work/failures"
    fi
  done
  echo "$((n * 2)) $failed" > "$work/requests"
}
admit_loop &
loop=$!
sleep 2
rotation_start=$(now_ms)
k -n "$ns" delete secret aiops-operator-webhook-certs >/dev/null
new_ca=""
for _ in $(seq 1 200); do
  new_ca=$(secret_ca)
  [[ -n $new_ca && $new_ca != "$ca" ]] && break
  sleep 0.1
done
[[ -n $new_ca && $new_ca != "$ca" ]] || { touch "$work/stop"; wait "$loop" || true; fail "no new pair after the Secret was deleted"; }
new_pem=$(base64 -d <<<"$new_ca")
for _ in $(seq 1 100); do
  bundle_has validatingwebhookconfiguration aiops-operator-validating "$new_pem" && break
  sleep 0.1
done
bundle_has validatingwebhookconfiguration aiops-operator-validating "$new_pem" \
  || { touch "$work/stop"; wait "$loop" || true; fail "the validating configuration does not trust the new CA"; }
# Every pod serves a certificate from the new CA (hot reload from the Secret).
for entry in "${pods[@]}"; do
  read -r pod ip <<<"$entry"
  served=""
  for _ in $(seq 1 100); do
    if curl -sf --max-time 2 --cacert <(printf '%s\n' "$new_pem") \
      --resolve "$service.$ns.svc:8443:$ip" "https://$service.$ns.svc:8443/readyz" >/dev/null 2>&1; then
      served=1; break
    fi
    sleep 0.1
  done
  [[ -n $served ]] || { touch "$work/stop"; wait "$loop" || true; fail "$pod does not serve a certificate from the new CA"; }
done
rotation_ms=$(( $(now_ms) - rotation_start ))
sleep 2
touch "$work/stop"
wait "$loop"
read -r total failed < "$work/requests"
[[ $failed == 0 ]] || fail "$failed of $total admission requests failed during the rotation: $(head -3 "$work/failures")"
(( total >= 10 )) || fail "only $total admission requests were made during the rotation"
# One writer per round (install, rotation); the other replica adopted its pair.
writes=$(cat "$work"/*.log | grep -c 'stored a new serving pair' || true)
[[ $writes == 2 ]] || fail "the Secret was written $writes times; expected once at install and once at rotation"
pass "Secret deleted: new CA stored by one replica, published and served by both pods in $rotation_ms ms; $total admission requests, 0 failed"

# --------------------------------------------------------------- uninstall
stop_all
"$helm" uninstall "$release" --namespace "$ns" --wait --timeout 60s >/dev/null
[[ -z $(webhook_configs) ]] || fail "helm uninstall left $(webhook_configs)"
k delete namespace in-cluster-check "$ns" --wait --timeout=60s >/dev/null
trap - EXIT
pass "helm uninstall left no webhook configuration; $(( $(now_ms) - started )) ms in all"
