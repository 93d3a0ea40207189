#!/usr/bin/env bash
# The sandbox: a real Kubernetes control plane on 127.0.0.1 with kwok nodes.
#
#   cluster.sh up      build (cached) and start etcd, kube-apiserver,
#                      kube-controller-manager, kube-scheduler and kwok; wait
#                      until healthy; write target/sandbox/kubeconfig
#   cluster.sh down    stop exactly the processes `up` started (recorded PIDs)
#                      and remove the state; logs stay in target/sandbox/logs
#   cluster.sh status  exit 0 when the sandbox is running and healthy
#   cluster.sh restart COMPONENT [DOWN_SECONDS]
#                      stop one component (etcd, kube-apiserver, ...) and
#                      start it again with the same flags, ports and data
#                      after DOWN_SECONDS (default 0); for fault tests
#
# Both up and down are idempotent. Ports are chosen free at start-up, so the
# sandbox never collides with other services on the machine.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

state=${AIOPS_SANDBOX_DIR:-$repo/target/sandbox}
pids="$state/pids"
logs="$state/logs"
pki="$state/pki"
NODES=${AIOPS_SANDBOX_NODES:-4}

log() { echo "sandbox: $*" >&2; }
die() { echo "sandbox: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------- processes

# A recorded process is ours only if its PID is alive and still runs the
# binary we started (PIDs are reused).
pid_alive() {
  local name=$1 file="$pids/$1.pid"
  [[ -f $file ]] || return 1
  local pid exe
  read -r pid exe < "$file" || return 1
  [[ -n $pid && -d /proc/$pid ]] || return 1
  [[ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" == "$(readlink -f "$exe")" ]]
}

start_process() {
  local name=$1 exe=$2; shift 2
  mkdir -p "$pids" "$logs"
  # setsid: the component survives the shell that started it (make, CI),
  # and is stopped only by `down`.
  setsid "$exe" "$@" > "$logs/$name.log" 2>&1 < /dev/null &
  echo "$! $exe" > "$pids/$name.pid"
}

stop_process() {
  local name=$1 file="$pids/$1.pid"
  if pid_alive "$name"; then
    local pid; read -r pid _ < "$file"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
    if [[ -d /proc/$pid ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
    for _ in $(seq 1 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
  fi
  rm -f "$file"
}

free_ports() {
  # Ask the kernel for N distinct free ports on 127.0.0.1.
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

wait_for() {
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then
      die "$what not ready after ${seconds}s; see $logs/"
    fi
    sleep 0.3
  done
}

healthy() {
  [[ -f $state/kubeconfig && -f $state/ports.env ]] || return 1
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
    pid_alive "$c" || return 1
  done
  # shellcheck source=/dev/null
  source "$state/ports.env"
  curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null
}

# ---------------------------------------------------------------------- PKI

issue_cert() {
  # issue_cert NAME SUBJECT [SAN] — a client or serving cert signed by the CA.
  local name=$1 subject=$2 san=${3:-}
  openssl req -new -newkey rsa:2048 -nodes -subj "$subject" \
    -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
  local ext="$pki/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $san ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } > "$ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$ext"
}

make_pki() {
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -sha256 \
    -subj "/CN=aiops-sandbox-ca" -keyout "$pki/ca.key" -out "$pki/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  issue_cert apiserver "/CN=kube-apiserver" \
    "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue_cert admin "/O=system:masters/CN=sandbox-admin"
  issue_cert kube-controller-manager "/CN=system:kube-controller-manager"
  issue_cert kube-scheduler "/CN=system:kube-scheduler"
  issue_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

write_kubeconfig() {
  # write_kubeconfig FILE CERT-NAME
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: sandbox
  context:
    cluster: sandbox
    user: $2
    namespace: default
current-context: sandbox
EOF
}

# ---------------------------------------------------------------- commands

cmd_up() {
  if healthy; then
    log "already running; reusing it (kubeconfig: $state/kubeconfig)"
    return 0
  fi
  # A half-started or crashed sandbox is torn down before starting afresh.
  cmd_down quiet

  local bin; bin=$("$here/build.sh")
  local started=$SECONDS
  mkdir -p "$state" "$logs" "$pids"

  read -r ETCD_PORT ETCD_PEER_PORT APISERVER_PORT KCM_PORT SCHEDULER_PORT KWOK_PORT <<< "$(free_ports 6)"
  cat > "$state/ports.env" <<EOF
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
KCM_PORT=$KCM_PORT
SCHEDULER_PORT=$SCHEDULER_PORT
KWOK_PORT=$KWOK_PORT
EOF
  make_pki
  write_kubeconfig "$state/kubeconfig" admin
  write_kubeconfig "$state/kube-controller-manager.kubeconfig" kube-controller-manager
  write_kubeconfig "$state/kube-scheduler.kubeconfig" kube-scheduler

  start_process etcd "$bin/etcd" \
    --name sandbox --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "sandbox=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync=true --quota-backend-bytes=4294967296 --log-level=warn
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  # --enable-aggregator-routing: a webhook's clientConfig.service is dialled
  # at one of the Service's endpoints (pod IPs), as with a real network, not at
  # a cluster IP that only kube-proxy could route (tests/chart/in-cluster.sh).
  start_process kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,ResourceQuota,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --event-ttl 1h --profiling=false --v=1 \
    --enable-aggregator-routing=true
  wait_for kube-apiserver 90 curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" \
    --key "$pki/admin.key" "https://127.0.0.1:$APISERVER_PORT/readyz"

  start_process kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$state/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$state/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$state/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials=true --leader-elect=false \
    --cluster-cidr 10.244.0.0/16 --service-cluster-ip-range 10.0.0.0/24 \
    --controllers '*' --concurrent-deployment-syncs 10 --concurrent-replicaset-syncs 10 \
    --kube-api-qps 200 --kube-api-burst 400 --profiling=false --v=1
  start_process kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$state/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "$state/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "$state/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" \
    --leader-elect=false --profiling=false --v=1
  wait_for kube-controller-manager 60 curl -skf "https://127.0.0.1:$KCM_PORT/healthz"
  wait_for kube-scheduler 60 curl -skf "https://127.0.0.1:$SCHEDULER_PORT/healthz"

  # kwok: the simulated kubelets. Its Logs CRD lets stages publish crash logs.
  local kubectl=("$bin/kubectl" --kubeconfig "$state/kubeconfig")
  local kwok_src
  kwok_src=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  "${kubectl[@]}" apply -f "$kwok_src/kustomize/crd/bases/kwok.x-k8s.io_logs.yaml" >/dev/null
  python3 "$here/physics.py" --catalog "$here/images.yaml" --out "$state/physics" \
    --kube-version "$KUBE_VERSION"
  start_process kwok "$bin/kwok" \
    --kubeconfig "$state/kubeconfig" \
    --config "$state/physics/stages.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --enable-crds Logs \
    --server-address "127.0.0.1:$KWOK_PORT" --node-port "$KWOK_PORT" \
    --node-ip 127.0.0.1 --cidr 10.244.0.0/16 \
    --node-lease-duration-seconds 40
  wait_for kwok 30 curl -sf "http://127.0.0.1:$KWOK_PORT/healthz"

  for i in $(seq 0 $((NODES - 1))); do
    cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: sandbox-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: sandbox-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "1000"}
  capacity: {cpu: "64", memory: 256Gi, pods: "1000"}
---
EOF
  done | "${kubectl[@]}" apply -f - >/dev/null
  wait_for "kwok nodes" 60 bash -c "[[ \$(\"$bin/kubectl\" --kubeconfig '$state/kubeconfig' get nodes --no-headers 2>/dev/null | grep -cw Ready) -eq $NODES ]]"
  # Pods need the default ServiceAccount, which the controller-manager creates.
  wait_for "default service account" 60 "${kubectl[@]}" get serviceaccount default -n default

  echo "$bin" > "$state/bin-dir"
  log "up in $((SECONDS - started))s: $NODES nodes, Kubernetes $KUBE_VERSION, apiserver https://127.0.0.1:$APISERVER_PORT"
  log "kubeconfig: $state/kubeconfig (kubectl: $bin/kubectl)"
}

cmd_down() {
  local quiet=${1:-}
  # Reverse start order: kwok and controllers first, etcd last.
  for c in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_process "$c"
  done
  if [[ -d $state ]]; then
    find "$state" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
  fi
  [[ -n $quiet ]] || log "down"
}

cmd_status() {
  if healthy; then
    log "running: kubeconfig $state/kubeconfig"
  else
    log "not running (start it with: make cluster-up)"
    return 1
  fi
}

cmd_restart() {
  local name=${1:-} down=${2:-0} file pid exe
  [[ -n $name ]] || die "restart needs a component name"
  pid_alive "$name" || die "$name is not running"
  file="$pids/$name.pid"
  read -r pid exe < "$file"
  # The running process's own arguments: same flags, ports and data dir.
  local args=()
  mapfile -d '' args < "/proc/$pid/cmdline"
  stop_process "$name"
  log "$name stopped; down for ${down}s"
  sleep "$down"
  start_process "$name" "$exe" "${args[@]:1}"
  wait_for "$name after restart" 120 healthy
  log "$name restarted"
}

case ${1:-} in
  up) cmd_up ;;
  restart) shift; cmd_restart "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 {up|down|status|restart COMPONENT [DOWN_SECONDS]}" >&2; exit 2 ;;
esac
