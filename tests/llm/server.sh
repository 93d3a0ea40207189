#!/usr/bin/env bash
# The local model server: llama.cpp's OpenAI-compatible HTTP server (from the
# PyPI wheel xllamacpp) serving a hash-verified GGUF on 127.0.0.1.
#
#   server.sh up [qwen|smollm2]   install (cached, verified) and start the
#                                 server on a free port; wait until healthy;
#                                 print its URL. Reuses a running server with
#                                 the same model; replaces one with another.
#   server.sh down                stop exactly the process `up` started
#   server.sh status              exit 0 when it is running and healthy
#
# State in target/llm/ (AIOPS_LLM_DIR): pid ("PID"), url, port, model,
# model_path, env (LLM_URL=…, LLM_MODEL=…), and server.log. Both up and down
# are idempotent.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${AIOPS_LLM_DIR:-$repo/target/llm}
venv_py=$repo/.venv-llm/bin/python
serve=$here/serve.py
CTX=${AIOPS_LLM_CTX:-4096}
THREADS=${AIOPS_LLM_THREADS:-2}

log() { echo "llm: $*" >&2; }
die() { echo "llm: error: $*" >&2; exit 1; }

alias_of() {
  case $1 in
    qwen) echo qwen2.5-coder-0.5b-instruct ;;
    smollm2) echo smollm2-135m-instruct ;;
    *) die "unknown model '$1' (qwen or smollm2)" ;;
  esac
}

# The recorded PID is ours only while it is alive and still runs our
# launcher with our state dir (PIDs are reused; the exe alone is just python).
pid_ours() {
  [[ -f $state/pid ]] || return 1
  local pid; read -r pid < "$state/pid" || return 1
  [[ -n $pid && -d /proc/$pid ]] || return 1
  local cmd; cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *"$serve "* && $cmd == *" --url-file $state/url"* ]]
}

healthy() {
  pid_ours || return 1
  [[ -f $state/url ]] || return 1
  curl -sf --max-time 5 "$(cat "$state/url")/health" >/dev/null
}

cmd_down() {
  if pid_ours; then
    local pid; read -r pid < "$state/pid"
    log "stopping the model server (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
    if [[ -d /proc/$pid ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
    for _ in $(seq 1 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
  fi
  rm -f "$state/pid" "$state/url" "$state/url.tmp" "$state/port" "$state/model" "$state/model_path" "$state/env"
}

cmd_up() {
  local model=${1:-qwen} alias
  alias=$(alias_of "$model")
  if healthy; then
    if [[ $(cat "$state/model" 2>/dev/null) == "$model" ]]; then
      log "already running $model; reusing it"
      cat "$state/url"
      return 0
    fi
    log "running $(cat "$state/model" 2>/dev/null || echo '?'); replacing it with $model"
  fi
  cmd_down

  # Verified or nothing: install.py exits non-zero on any hash mismatch.
  local model_path
  model_path=$(python3 "$here/install.py" "$model" --print-path) || die "model install failed; not starting"
  [[ -x $venv_py && -f $model_path ]] || die "install left no server or model"

  mkdir -p "$state"
  local started=$SECONDS
  # setsid: the server survives the shell that started it (make, CI) and is
  # stopped only by `down`.
  setsid "$venv_py" "$serve" --model "$model_path" --alias "$alias" --host 127.0.0.1 --port 0 \
    --ctx "$CTX" --threads "$THREADS" --url-file "$state/url" \
    > "$state/server.log" 2>&1 < /dev/null &
  echo "$!" > "$state/pid"
  echo "$model" > "$state/model"
  echo "$model_path" > "$state/model_path"

  local deadline=$((SECONDS + ${AIOPS_LLM_START_TIMEOUT:-180}))
  until healthy; do
    if ! pid_ours; then
      tail -n 30 "$state/server.log" >&2 || true
      cmd_down
      die "the model server exited during start-up; log: $state/server.log"
    fi
    if (( SECONDS >= deadline )); then
      tail -n 30 "$state/server.log" >&2 || true
      cmd_down
      die "the model server was not healthy after ${AIOPS_LLM_START_TIMEOUT:-180}s"
    fi
    sleep 0.3
  done
  local url; url=$(cat "$state/url")
  echo "${url##*:}" > "$state/port"
  printf 'LLM_URL=%s\nLLM_MODEL=%s\n' "$url" "$alias" > "$state/env"
  log "$model ($alias) ready in $((SECONDS - started))s on $url (pid $(cat "$state/pid")); log: $state/server.log"
  echo "$url"
}

cmd_status() {
  if healthy; then
    echo "llm: running $(cat "$state/model") on $(cat "$state/url") (pid $(cat "$state/pid"))"
  else
    echo "llm: not running"
    return 1
  fi
}

case ${1:-} in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: $0 up [qwen|smollm2] | down | status" ;;
esac
