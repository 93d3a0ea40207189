#!/usr/bin/env bash
# Ollama, built here from its pinned Go module (build.sh), serving a
# hash-verified GGUF on 127.0.0.1. It never pulls from a model registry: the
# model is the file `make llm-install` assembled and verified, imported with
# an explicit ChatML template.
#
#   server.sh up [qwen|smollm2]   build (cached), start `ollama serve` on a
#                                 free port, import the model, wait until it
#                                 answers; print its URL. Reuses a running
#                                 server; imports a different model into it.
#   server.sh down                stop exactly the process `up` started
#   server.sh status              exit 0 when it is running and healthy
#
# State in target/ollama/ (AIOPS_OLLAMA_DIR): pid, url, port, model, env
# (OLLAMA_URL=…, OLLAMA_MODEL=…) and server.log. Models live in the cache
# (~/.cache/aiops-operator/ollama/models), beside the builds.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${AIOPS_OLLAMA_DIR:-$repo/target/ollama}
cache_root=${AIOPS_OLLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aiops-operator/ollama}
models=$cache_root/models

log() { echo "ollama: $*" >&2; }
die() { echo "ollama: error: $*" >&2; exit 1; }

# The same names the llama.cpp route serves, so a switch of route keeps them.
name_of() {
  case $1 in
    qwen) echo qwen2.5-coder-0.5b-instruct ;;
    smollm2) echo smollm2-135m-instruct ;;
    *) die "unknown model '$1' (qwen or smollm2)" ;;
  esac
}

# The recorded PID is ours only while it is alive, runs an ollama binary
# from our cache as `serve`, and listens where our state says (PIDs are
# reused; another ollama may run on this machine).
pid_ours() {
  [[ -f $state/pid && -f $state/port ]] || return 1
  local pid port; read -r pid < "$state/pid" || return 1; read -r port < "$state/port" || return 1
  [[ -n $pid && -d /proc/$pid ]] || return 1
  local exe; exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ $exe == "$cache_root"/*/bin/ollama ]] || return 1
  [[ $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) == *" serve "* ]] || return 1
  tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "OLLAMA_HOST=127.0.0.1:$port"
}

healthy() {
  pid_ours || return 1
  curl -sf --max-time 5 "$(cat "$state/url")/api/version" >/dev/null
}

cmd_down() {
  if pid_ours; then
    local pid; read -r pid < "$state/pid"
    log "stopping the Ollama server (pid $pid)"
    # TERM lets the server stop the model runners it started.
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
    if [[ -d /proc/$pid ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
    # setsid made the server lead its own group: a runner it left behind is
    # in that group and nowhere else.
    kill -KILL -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
  fi
  rm -f "$state/pid" "$state/url" "$state/port" "$state/model" "$state/env"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_server() {
  local root=$1 port
  port=$(free_port)
  mkdir -p "$state/home" "$models"
  echo "$port" > "$state/port"
  echo "http://127.0.0.1:$port" > "$state/url"
  # HOME: the server writes its key pair under ~/.ollama; keep it out of the
  # user's home. No cloud features, one model and one request at a time (two
  # shared cores), a context that holds the operator's prompt and answer.
  # setsid: the server survives the shell that started it (make, CI) and is
  # stopped only by `down`.
  HOME=$state/home OLLAMA_HOST=127.0.0.1:$port OLLAMA_MODELS=$models OLLAMA_NO_CLOUD=1 \
    OLLAMA_NUM_PARALLEL=1 OLLAMA_MAX_LOADED_MODELS=1 \
    OLLAMA_CONTEXT_LENGTH=${AIOPS_OLLAMA_CTX:-4096} \
    setsid "$root/bin/ollama" serve > "$state/server.log" 2>&1 < /dev/null &
  echo "$!" > "$state/pid"
  local deadline=$((SECONDS + ${AIOPS_OLLAMA_START_TIMEOUT:-60}))
  local pid=$!
  until healthy; do
    # Alive is the test here, not pid_ours: until setsid has exec'd the
    # server, the process is not yet an ollama binary.
    if [[ ! -d /proc/$pid ]]; then
      tail -n 30 "$state/server.log" >&2 || true
      cmd_down
      die "ollama serve exited during start-up; log: $state/server.log"
    fi
    if (( SECONDS >= deadline )); then
      tail -n 30 "$state/server.log" >&2 || true
      cmd_down
      die "ollama serve did not answer after ${AIOPS_OLLAMA_START_TIMEOUT:-60}s"
    fi
    sleep 0.3
  done
}

# One compute thread by default: these CPU backends are built without OpenMP,
# and ggml's own thread pool busy-waits between steps, so two threads on two
# cores that other work shares generated 1-2.5 tokens/s with SmolLM2 where
# one thread generated 36 (AIOPS_OLLAMA_THREADS to change it).
#
# Imports the verified GGUF under `name` unless the same Modelfile was
# imported before. Without an explicit TEMPLATE Ollama falls back to
# `{{ .Prompt }}` for these files, which drops the system message without
# an error; both models use ChatML (their GGUFs' own chat templates say so).
import_model() {
  local root=$1 gguf=$2 name=$3
  local modelfile=$state/Modelfile.$name
  cat > "$modelfile" <<EOF
FROM $gguf
TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
PARAMETER stop "<|im_start|>"
PARAMETER stop "<|im_end|>"
PARAMETER num_thread ${AIOPS_OLLAMA_THREADS:-1}
EOF
  local stamp=$models/.imported.$name want
  want=$(sha256sum < "$modelfile" | cut -c1-64)
  if [[ $(cat "$stamp" 2>/dev/null) == "$want" ]] \
     && curl -sf --max-time 10 "$(cat "$state/url")/api/show" -d "{\"model\":\"$name\"}" >/dev/null; then
    log "$name already imported; reusing it"
    return 0
  fi
  log "importing $gguf as $name"
  OLLAMA_HOST=127.0.0.1:$(cat "$state/port") HOME=$state/home \
    "$root/bin/ollama" create "$name" -f "$modelfile" > "$state/create.log" 2>&1 \
    || { cat "$state/create.log" >&2; die "ollama create $name failed"; }
  echo "$want" > "$stamp"
}

cmd_up() {
  local model=${1:-qwen} name root gguf
  name=$(name_of "$model")
  # Verified or nothing: install.py exits non-zero on any hash mismatch.
  gguf=$(python3 "$repo/tests/llm/install.py" "$model" --print-path) || die "model install failed; not starting"
  root=$(bash "$here/build.sh") || die "the Ollama build failed"
  mkdir -p "$state"
  local started=$SECONDS
  if healthy && [[ $(readlink "/proc/$(cat "$state/pid")/exe") == "$root/bin/ollama" ]]; then
    log "already running; reusing it"
  else
    cmd_down
    start_server "$root"
  fi
  import_model "$root" "$gguf" "$name"
  echo "$model" > "$state/model"
  local url; url=$(cat "$state/url")
  printf 'OLLAMA_URL=%s\nOLLAMA_MODEL=%s\n' "$url" "$name" > "$state/env"
  log "$model ($name) ready in $((SECONDS - started))s on $url (pid $(cat "$state/pid")); log: $state/server.log"
  echo "$url"
}

cmd_status() {
  if healthy; then
    echo "ollama: running $(cat "$state/model" 2>/dev/null || echo '(no model yet)') on $(cat "$state/url") (pid $(cat "$state/pid"))"
  else
    echo "ollama: not running"
    return 1
  fi
}

case ${1:-} in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: $0 up [qwen|smollm2] | down | status" ;;
esac
