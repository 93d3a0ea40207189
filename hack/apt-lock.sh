# Sourced by each script of this project that runs apt-get. `make test` runs
# the Ollama build (which fetches two header packages with apt) in the
# background while the image and browser steps install theirs, and apt
# refuses a second `apt-get update` while one holds its lists lock instead of
# waiting. So each apt call of this project first takes this lock, which
# waits; the lock is released when the calling (sub)shell exits.
apt_lock() {
  local dir=${XDG_CACHE_HOME:-$HOME/.cache}/aiops-operator
  mkdir -p "$dir"
  exec 8>"$dir/apt.lock"
  if ! flock -n 8; then
    echo "apt-lock: another apt step of this project is running; waiting for it" >&2
    flock 8
  fi
}
