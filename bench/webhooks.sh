#!/usr/bin/env bash
# Whether webhook delivery keeps up: the durable all-in-one with one webhook
# on every message (bench/src/bin/accept-hook.rs receiving, POST /webhook),
# messages posted at a fixed rate over some channels, and the webhook backlog
# (`crier_webhook_backlog`, refreshed each second) sampled every half second.
# Prints, per run, the largest backlog seen while posting, how long after the
# last post the backlog took to reach 0, and the events delivered.
#
#   bench/webhooks.sh [runs] [rate] [channels] [seconds]    (default 3 5000 100 20)
#
# Needs the release build of crier, crier-bench and accept-hook.
set -euo pipefail

runs=${1:-3}
rate=${2:-5000}
channels=${3:-100}
seconds=${4:-20}
messages=$((rate * seconds))
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

metric() { # metric BASE NAME: the value of an unlabelled sample, or of the summed labelled ones
  curl -sf "$1/metrics" | awk -v name="$2" '$1 == name || index($1, name "{") == 1 {sum += $2} END {print sum + 0}'
}

one_run() {
  local port base crier_pid bench_pid peak=0 backlog drained_after=-1 started
  start_small_server accept-hook "$work"
  port=$(free_port)
  base="http://127.0.0.1:$port"
  RUST_LOG=warn ./target/release/crier --listen "127.0.0.1:$port" --data-dir "$work/data" \
    --post-rate-per-sec 0 --webhook-url "http://127.0.0.1:$small_port/webhook" \
    --webhook-secret bench >"$work/crier.out" 2>"$work/crier.log" &
  crier_pid=$!
  wait_ready "$base"
  ./target/release/crier-bench --sub-url "$base/channels/{channel}/events" \
    --pub-url "$base/channels/{channel}/messages" --subscribers "$channels" \
    --channels "$channels" --messages "$messages" --rate "$rate/s" \
    --source-addrs 0 --assert-lossless >"$work/bench.out" 2>&1 &
  bench_pid=$!
  while kill -0 "$bench_pid" 2>/dev/null; do
    backlog=$(metric "$base" crier_webhook_backlog)
    [ "${backlog%.*}" -gt "$peak" ] && peak=${backlog%.*}
    sleep 0.5
  done
  wait "$bench_pid" || { cat "$work/bench.out" >&2; exit 1; }
  started=$(date +%s.%N)
  for _ in $(seq 1 120); do
    backlog=$(metric "$base" crier_webhook_backlog)
    if [ "${backlog%.*}" -eq 0 ]; then
      drained_after=$(echo "$(date +%s.%N) - $started" | bc)
      break
    fi
    sleep 0.25
  done
  delivered=$(metric "$base" 'crier_webhook_deliveries_total{outcome="delivered"}')
  echo "rate $rate/s over $channels channels: peak backlog $peak, drained ${drained_after}s after the last post, $delivered of $messages delivered"
  stop_pids "$crier_pid" "$small_pid"
  rm -rf "$work/data"
}

for _ in $(seq 1 "$runs"); do one_run; done
