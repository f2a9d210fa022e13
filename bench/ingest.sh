#!/usr/bin/env bash
# Ingest throughput, side by side: POST/s of the all-in-one crier with durable
# acknowledgements (flush before 201, the default), of crier answering from
# memory (--durable-ack false), of Nchan (memory only), of Nchan keeping its
# messages in Redis (append-only file synced before every answer:
# bench/peers/nchan-redis/), of the split deployment's chat-service
# (durable, publishing to a Mosquitto), and of a bare actix-web handler that
# parses and answers the same POST and stores nothing (the floor of a POST,
# bench/src/bin/bare-actix.rs), alternating runs. crier-hook is the durable
# all-in-one asking a publish hook about every post (bench/src/bin/accept-hook.rs,
# one worker, accepting everything), crier-webhook the durable all-in-one with
# one webhook on every message (the same server receiving), and crier-base the
# durable all-in-one built from another commit (BENCH_BASELINE, the path to its
# crier binary), to measure a change side by side: not in the default list.
#
#   bench/ingest.sh [runs] [seconds] [connections]
#
#   BENCH_INGEST_SYSTEMS  of: crier-durable nchan crier-memory nchan-redis split
#                         bare-actix crier-hook crier-webhook crier-base
#                         (default: the first six, in that order within each run)
#
# Needs `wrk`; for Nchan `nginx` with `libnginx-mod-nchan`, for Nchan+Redis
# `redis-server` too, for the split `mosquitto`. Prints one line per run and
# the medians.
set -euo pipefail

runs=${1:-3}
seconds=${2:-10}
connections=${3:-64}
systems=${BENCH_INGEST_SYSTEMS:-crier-durable nchan crier-memory nchan-redis split bare-actix}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
# The same packages as bench/run.sh builds, so that neither rebuilds the other's.
cargo build --release --quiet -p crier -p chat-service -p broadcast-sse -p crier-bench
work=$(mktemp -d)
cleanup() {
  bench/peers/nchan/stop.sh "$work/nchan" 2>/dev/null || true
  bench/peers/nchan-redis/stop.sh "$work/nchan-redis" 2>/dev/null || true
  # shellcheck disable=SC2046 # one pid per word
  stop_pids $(jobs -p)
  rm -rf "$work"
}
trap cleanup EXIT

# Each *_run starts its servers in this shell (so that `jobs -p` finds them if
# the script stops halfway), measures, stops them and leaves POST/s in $rps.

# wrk against a base URL (target crier or nchan); prints requests/s, fails on any error.
# A second of the same load goes first and is not counted: in its first second a
# server may still be connecting to what it stores in (Nchan+Redis answered a few
# 5xx then), and that start-up is not what this measures.
load() {
  local base=$1 target=$2 rps
  BENCH_TARGET=$target wrk -t2 -c"$connections" -d1s -s bench/post.lua "$base" >/dev/null
  rps=$(BENCH_TARGET=$target wrk -t2 -c"$connections" -d"${seconds}s" -s bench/post.lua "$base" |
    tee "$work/wrk.out" | awk '/Requests\/sec/ {print $2}')
  if grep -q "Non-2xx\|Socket errors" "$work/wrk.out"; then
    echo "errors during the run:" >&2
    cat "$work/wrk.out" >&2
    exit 1
  fi
  echo "$rps"
}

# crier_run DURABLE [FLAG...]: the all-in-one (crier_bin), with more flags if given.
crier_bin=./target/release/crier
crier_run() {
  local durable=$1 port pid
  shift
  port=$(free_port)
  RUST_LOG=warn "$crier_bin" --listen "127.0.0.1:$port" \
    --data-dir "$work/data-$durable-$RANDOM" --durable-ack "$durable" \
    --post-rate-per-sec 0 "$@" >"$work/crier.out" 2>"$work/crier.log" &
  pid=$!
  wait_ready "http://127.0.0.1:$port"
  rps=$(load "http://127.0.0.1:$port" crier)
  stop_pids "$pid"
  rm -rf "$work"/data-*
}

# nchan_run PEER: PEER is nchan or nchan-redis, a directory of bench/peers/.
nchan_run() {
  local peer=$1 port
  port=$(free_port)
  bench/peers/"$peer"/start.sh "$port" "$work/$peer" >/dev/null
  rps=$(load "http://127.0.0.1:$port" nchan)
  bench/peers/"$peer"/stop.sh "$work/$peer"
  rm -rf "${work:?}/$peer"
}

# The split deployment's ingest: chat-service (durable) publishing to Mosquitto.
split_run() {
  start_mosquitto "$work/split"
  wait_port "$mosquitto_port"
  start_chat_service "$work/split" "$mosquitto_port"
  wait_ready "http://127.0.0.1:$chat_port"
  rps=$(load "http://127.0.0.1:$chat_port" crier)
  stop_pids "$chat_pid" "$mosquitto_pid"
  rm -rf "$work/split"
}

# The floor: actix-web parsing and answering the same POST, storing nothing.
bare_run() {
  start_small_server bare-actix "$work"
  rps=$(load "http://127.0.0.1:$small_port" crier)
  stop_pids "$small_pid"
}

# The durable all-in-one asking a hook that accepts everything.
hook_run() {
  start_small_server accept-hook "$work"
  crier_run true --publish-hook-url "http://127.0.0.1:$small_port/"
  stop_pids "$small_pid"
}

# The durable all-in-one with one webhook on every message.
webhook_run() {
  start_small_server accept-hook "$work"
  crier_run true --webhook-url "http://127.0.0.1:$small_port/webhook" --webhook-secret bench
  stop_pids "$small_pid"
}

# The durable all-in-one built from another commit.
base_run() {
  if [ ! -x "${BENCH_BASELINE:-}" ]; then
    echo "crier-base needs BENCH_BASELINE, the path to a crier binary" >&2
    exit 2
  fi
  crier_bin=$BENCH_BASELINE
  crier_run true
  crier_bin=./target/release/crier
}

measure() {
  case $1 in
    crier-hook) hook_run ;;
    crier-webhook) webhook_run ;;
    crier-base) base_run ;;
    crier-durable) crier_run true ;;
    crier-memory) crier_run false ;;
    nchan | nchan-redis) nchan_run "$1" ;;
    split) split_run ;;
    bare-actix) bare_run ;;
    *) echo "unknown system '$1' in BENCH_INGEST_SYSTEMS" >&2; exit 2 ;;
  esac
}

describe() {
  case $1 in
    crier-durable) echo "crier, durable (flush before 201)" ;;
    crier-memory) echo "crier, in-memory acknowledgement" ;;
    nchan) echo "nchan (memory only)" ;;
    nchan-redis) echo "nchan + redis (appendfsync always)" ;;
    split) echo "split chat-service, durable" ;;
    bare-actix) echo "bare actix-web handler (no store)" ;;
    crier-hook) echo "crier, durable, with a publish hook" ;;
    crier-webhook) echo "crier, durable, with a webhook" ;;
    crier-base) echo "crier, durable, the baseline build" ;;
  esac
}

declare -A rates=()
for run in $(seq 1 "$runs"); do
  line="run $run:"
  for system in $systems; do
    measure "$system"
    rates[$system]+="$rps "
    line+=" $system ${rps} POST/s,"
  done
  echo "${line%,}"
done
echo "median of $runs runs, $connections connections, ${seconds}s each:"
for system in $systems; do
  # shellcheck disable=SC2086 # one rate per word
  printf '  %-36s %s POST/s\n' "$(describe "$system"):" "$(printf '%s\n' ${rates[$system]} | median)"
done
