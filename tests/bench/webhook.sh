#!/usr/bin/env bash
# `make bench-webhook`: drives the release TLS webhook (standalone: no
# cluster; all 12 policies in policies/; Enforce) with oha over loopback,
# with realistic Pod and Deployment AdmissionReviews (tests/bench/make_reviews.py),
# and writes target/bench/webhook.json.
#
# Five runs at the same fixed concurrency, each BENCH_SECONDS long, repeated
# BENCH_ROUNDS times in turn (this VM's speed drifts from minute to minute;
# a /validate run and the /noop run right after it see the same machine):
#   1. /validate at a fixed 2,000 req/s (latency-corrected): rps, p50, p99;
#   2. /noop (parse the review, allow without evaluating) at the same rate:
#      noop_p50_ms, noop_p99_ms, the latency floor of the same stack;
#   3. /validate as fast as it goes: max_rps;
#   4. /noop as fast as it goes: noop_max_rps, the ceiling of the same
#      TLS/HTTP/JSON stack;
#   5. /validate and /noop interleaved in one stream at the same fixed
#      rate, each request's endpoint drawn at random: a stall of the
#      machine or of the client lands on both endpoints alike, so their
#      p99s differ only by what /validate itself adds.
# The fixed-rate runs keep every request (oha --db-url, written after the
# run), and their percentiles leave out the requests scheduled in the run's
# first second: then oha is still opening its TLS connections, and about
# 1 % of a run's requests queue behind them, right at the p99. That second
# is reported apart (summarize_webhook.py).
# Headline figures are medians over the rounds; the ratios are medians of
# each round's /validate over /noop (ceiling: max rps; tail: p99 at the
# fixed rate). After each fixed-rate /validate run the server's /metrics is
# saved, so each round also reports where the server's own time went
# (aiops_admission_stage_seconds). The server's peak RSS (VmHWM) is read at
# the end. oha runs on the same 2 cores as the server, so every figure
# includes the client's CPU cost.
set -euo pipefail
cd "$(dirname "$0")/../.."

OHA_VERSION=1.16.0
OHA=target/tools/bin/oha
OUT=target/bench
SECONDS_PER_RUN=${BENCH_SECONDS:-8}
ROUNDS=${BENCH_ROUNDS:-3}
CONCURRENCY=${BENCH_CONCURRENCY:-16}
RATE=2000

log() { printf '==> %s\n' "$*" >&2; }

if ! "$OHA" --version 2>/dev/null | grep -qF "$OHA_VERSION"; then
  log "installing oha $OHA_VERSION into target/tools"
  cargo install oha --version "$OHA_VERSION" --locked --root target/tools
fi

log "building the release binary"
cargo build --release --locked
BIN=target/release/aiops-operator

mkdir -p "$OUT"
work=$(mktemp -d)
pid=
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$BIN" certs --out "$work/certs" --ip 127.0.0.1 >/dev/null
python3 tests/bench/make_reviews.py "$work/reviews" >&2
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# The production log level (info): the server does what it does in a cluster.
"$BIN" run --webhook-only --standalone --admission-mode Enforce \
  --webhook-listen "127.0.0.1:$port" \
  --webhook-tls-cert "$work/certs/tls.crt" --webhook-tls-key "$work/certs/tls.key" \
  --policies-dir policies >"$work/webhook.log" 2>&1 &
pid=$!

base="https://127.0.0.1:$port"
curl_tls=(curl --silent --show-error --cacert "$work/certs/ca.crt")
for _ in $(seq 100); do
  if "${curl_tls[@]}" "$base/readyz" >/dev/null 2>&1; then break; fi
  kill -0 "$pid" 2>/dev/null || { cat "$work/webhook.log" >&2; exit 1; }
  sleep 0.1
done
"${curl_tls[@]}" "$base/readyz" >/dev/null

# Every review must be evaluated and allowed, or the figures mean nothing.
for review in pod deployment; do
  reply=$("${curl_tls[@]}" -H 'Content-Type: application/json' \
    --data-binary "@$work/reviews/$review-review.json" "$base/validate")
  if ! grep -q '"allowed":true' <<<"$reply"; then
    echo "the $review review was not allowed: $reply" >&2
    exit 1
  fi
done

oha_run() { # name path extra-args...
  local name=$1 path=$2
  shift 2
  log "oha: $name (${SECONDS_PER_RUN}s, $CONCURRENCY connections${*:+, $*})"
  "$OHA" --no-tui --output-format json -o "$work/$name.json" \
    -z "${SECONDS_PER_RUN}s" -w -c "$CONCURRENCY" \
    -m POST -T application/json -Z "$work/reviews/reviews.jsonl" \
    --cacert "$work/certs/ca.crt" "$@" "$base$path"
}

# One fixed-rate stream over both endpoints; oha keeps every request
# (endpoint, latency-corrected duration) in an SQLite file for the summary.
paired_run() { # name
  local name=$1
  log "oha: $name (${SECONDS_PER_RUN}s, $CONCURRENCY connections, /validate and /noop interleaved at $RATE req/s)"
  printf '%s\n' "$base/validate" "$base/noop" >"$work/paired-urls"
  "$OHA" --no-tui --output-format json -o "$work/$name.json" \
    -z "${SECONDS_PER_RUN}s" -w -c "$CONCURRENCY" \
    -m POST -T application/json -Z "$work/reviews/reviews.jsonl" \
    --cacert "$work/certs/ca.crt" -q "$RATE" --latency-correction \
    --db-url "$work/$name.db" --urls-from-file "$work/paired-urls"
}

scrape() { # file
  "${curl_tls[@]}" "$base/metrics" >"$1"
}

# The server's context switches, summed over its threads: "voluntary
# involuntary". An involuntary one is a thread preempted while it had
# work, the suspect for a tail the handler's own stage timings do not see.
switches() { # file
  cat /proc/"$pid"/task/*/status 2>/dev/null | awk '
    /^voluntary_ctxt_switches/ {v += $2}
    /^nonvoluntary_ctxt_switches/ {n += $2}
    END {print v + 0, n + 0}' >"$1"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# Warm-up: connections, allocator and caches; not recorded.
BENCH_SECONDS_SAVED=$SECONDS_PER_RUN
SECONDS_PER_RUN=3 oha_run warmup /validate
SECONDS_PER_RUN=$BENCH_SECONDS_SAVED
for round in $(seq "$ROUNDS"); do
  cut -d' ' -f1-3 /proc/loadavg >"$work/load-$round"
  scrape "$work/fixed-$round.before.metrics"
  switches "$work/fixed-$round.switches.before"
  oha_run "fixed-$round" /validate -q "$RATE" --latency-correction --db-url "$work/fixed-$round.db"
  switches "$work/fixed-$round.switches"
  scrape "$work/fixed-$round.metrics"
  switches "$work/noop-fixed-$round.switches.before"
  oha_run "noop-fixed-$round" /noop -q "$RATE" --latency-correction --db-url "$work/noop-fixed-$round.db"
  switches "$work/noop-fixed-$round.switches"
  oha_run "max-$round" /validate
  oha_run "noop-$round" /noop
  paired_run "paired-$round"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
rss_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")

python3 tests/bench/summarize_webhook.py \
  --runs "$work" --rounds "$ROUNDS" \
  --rss-kib "$rss_kib" --rate "$RATE" --concurrency "$CONCURRENCY" \
  --seconds "$SECONDS_PER_RUN" --reviews "$work/reviews" \
  --oha-version "$OHA_VERSION" --load-before "$load_before" --load-after "$load_after" \
  >"$OUT/webhook.json"
log "wrote $OUT/webhook.json"
cat "$OUT/webhook.json"
python3 tests/bench/summarize_webhook.py --table "$OUT/webhook.json" >&2
