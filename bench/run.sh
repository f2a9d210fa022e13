#!/usr/bin/env bash
# Runs every benchmark scenario against the all-in-one crier, the split
# deployment (Mosquitto + chat-service + broadcast-sse) and Nchan, side by side
# (the systems alternate within each round), and writes BENCHMARKS.md.
#
#   bench/run.sh [rounds]            (default 3; results in target/bench/)
#
# A part of it, smaller, for trying a change (BENCHMARKS.md is then left alone;
# render the results with `bench/report.py target/bench OUT.md`):
#
#   BENCH_SYSTEMS="crier split" BENCH_ONLY=bigroom BENCH_SUBSCRIBERS=500 bench/run.sh 1
#
#   BENCH_SYSTEMS      systems to run, of: crier split nchan baseline cluster
#                      (default: the first three); baseline is crier built from
#                      another commit, at BENCH_BASELINE (a path to its crier
#                      binary), to measure what a change costs side by side;
#                      cluster is deploy/local-cluster.sh (2 bridged brokers,
#                      2 shards, 3 nodes) measured through its nginx front
#   BENCH_ONLY         scenarios to run, of: idle fanout channels storm bigroom
#                      sweep ingest (default: all)
#   BENCH_SUBSCRIBERS  subscribers of the 10,000-subscriber scenarios (channels
#                      scale with them); sweep points above it are skipped
#   BENCH_CHAT_FLAGS   flags added to crier's, the baseline's and the split
#                      chat-service's command lines (like
#                      "--max-fanout-delay 20ms")
#   BENCH_METRICS      1: after each run of crier, baseline or split, save the
#                      servers' /metrics next to its result (SCENARIO-SYSTEM-
#                      ROUND.SERVICE.prom), for bench/hops.py's per-hop times
#
# Needs nginx with libnginx-mod-nchan, wrk and mosquitto (Debian: nginx
# libnginx-mod-nchan wrk mosquitto; redis-server too for the ingest run, and
# linux-perf for its profile). Every
# server runs on loopback with a fresh data dir, started anew for each run;
# subscribers connect from 127.0.0.2-9.
set -euo pipefail

rounds=${1:-3}
systems=${BENCH_SYSTEMS:-crier split nchan}
scenarios=${BENCH_ONLY:-idle fanout channels storm bigroom sweep ingest}
subscribers=${BENCH_SUBSCRIBERS:-10000}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh
for system in $systems; do
  case $system in
    crier | split | nchan | cluster) ;;
    baseline)
      if [ ! -x "${BENCH_BASELINE:-}" ]; then
        echo "baseline needs BENCH_BASELINE, the path to a crier binary" >&2
        exit 2
      fi
      ;;
    *) echo "unknown system '$system' in BENCH_SYSTEMS (crier split nchan baseline cluster)" >&2; exit 2 ;;
  esac
done
results=target/bench
rm -rf "$results" && mkdir -p "$results"
cargo build --release --quiet -p crier -p chat-service -p broadcast-sse -p crier-bench
bench=./target/release/crier-bench
work=$(mktemp -d)
running=""      # the system whose servers are up
server_pids=()  # their processes, stopped in this order
metrics_urls=() # SERVICE=URL of each one's /metrics
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT

# wanted SCENARIO: whether BENCH_ONLY asks for it.
wanted() {
  [[ " $scenarios " == *" $1 "* ]]
}

# Each start_SYSTEM puts its files in $work/server and sets target_args, the
# crier-bench flags that point at it; stop_SYSTEM undoes it.
start_crier() {
  start_crier_binary ./target/release/crier
}

stop_crier() {
  stop_pids "${server_pids[@]}"
}

start_baseline() {
  start_crier_binary "$BENCH_BASELINE"
}

stop_baseline() {
  stop_pids "${server_pids[@]}"
}

# start_crier_binary PATH: the all-in-one from that binary.
start_crier_binary() {
  local port
  port=$(free_port)
  mkdir -p "$work/server"
  # shellcheck disable=SC2086 # BENCH_CHAT_FLAGS is a list of flags
  RUST_LOG=warn "$1" --listen "127.0.0.1:$port" --data-dir "$work/server/data" \
    --post-rate-per-sec 0 --max-streams-per-address 0 ${BENCH_CHAT_FLAGS:-} \
    >"$work/server/crier.out" 2>"$work/server/crier.log" &
  server_pids=($!)
  wait_ready "http://127.0.0.1:$port" || return 1
  metrics_urls=("crier=http://127.0.0.1:$port/metrics")
  target_args=(--sub-url "http://127.0.0.1:$port/channels/{channel}/events"
    --pub-url "http://127.0.0.1:$port/channels/{channel}/messages"
    --server-pid "${server_pids[0]}")
}

# The split deployment: Mosquitto, chat-service (POSTs, durable) and one
# broadcast-sse node (streams). CPU is the three together; memory per stream
# is broadcast-sse's, the process a deployment adds to hold more streams.
start_split() {
  local sse_port
  start_mosquitto "$work/server" || return 1
  server_pids=("$mosquitto_pid")
  wait_port "$mosquitto_port" || return 1
  # shellcheck disable=SC2086 # BENCH_CHAT_FLAGS is a list of flags
  start_chat_service "$work/server" "$mosquitto_port" ${BENCH_CHAT_FLAGS:-}
  server_pids=("$chat_pid" "${server_pids[@]}")
  wait_ready "http://127.0.0.1:$chat_port" || return 1
  sse_port=$(free_port)
  RUST_LOG=warn ./target/release/broadcast-sse --listen "127.0.0.1:$sse_port" \
    --mqtt-url "mqtt://127.0.0.1:$mosquitto_port" --topic-prefix crier \
    --history-url "http://127.0.0.1:$chat_port" --max-streams-per-address 0 \
    >"$work/server/broadcast-sse.out" 2>"$work/server/broadcast-sse.log" &
  server_pids=($! "${server_pids[@]}")
  wait_ready "http://127.0.0.1:$sse_port" || return 1
  metrics_urls=("chat-service=http://127.0.0.1:$chat_port/metrics"
    "broadcast-sse=http://127.0.0.1:$sse_port/metrics")
  target_args=(--sub-url "http://127.0.0.1:$sse_port/channels/{channel}/events"
    --pub-url "http://127.0.0.1:$chat_port/channels/{channel}/messages"
    --server-pid "$(IFS=,; echo "${server_pids[*]}")"
    --memory-pid "${server_pids[0]}")
}

stop_split() {
  # broadcast-sse first, so that it does not log the broker going away.
  stop_pids "${server_pids[@]}"
}

# The cluster of deploy/local-cluster.sh, through its front. CPU is every
# process's (brokers, shards, nodes and nginx); memory per stream is the three
# nodes' together.
start_cluster() {
  local front pids node_pids
  front=$(CRIER_CLUSTER_DIR="$work/server" deploy/local-cluster.sh up | sed -n 's/^front: //p') ||
    return 1
  [ -n "$front" ] || return 1
  pids=$(awk '{print $2}' "$work/server/processes" | paste -sd,)
  node_pids=$(awk '$1 ~ /^node-/ {print $2}' "$work/server/processes" | paste -sd,)
  server_pids=(cluster)
  target_args=(--sub-url "$front/channels/{channel}/events"
    --pub-url "$front/channels/{channel}/messages"
    --server-pid "$pids" --memory-pid "$node_pids")
}

stop_cluster() {
  CRIER_CLUSTER_DIR="$work/server" deploy/local-cluster.sh down >/dev/null || true
}

start_nchan() {
  local port pid
  port=$(free_port)
  pid=$(bench/peers/nchan/start.sh "$port" "$work/server") || return 1
  server_pids=("$pid")
  target_args=(--sub-url "http://127.0.0.1:$port/sub/{channel}"
    --pub-url "http://127.0.0.1:$port/pub/{channel}"
    --pub-body '{text}' --pub-content-type text/plain
    --server-pid "$pid")
}

stop_nchan() {
  bench/peers/nchan/stop.sh "$work/server" || true
}

stop_server() {
  if [ -n "$running" ]; then
    "stop_$running"
  fi
  running=""
  server_pids=()
  metrics_urls=()
  rm -rf "$work/server"
}

# save_metrics NAME: each server's /metrics as $results/NAME.SERVICE.prom.
save_metrics() {
  local entry
  [ "${BENCH_METRICS:-0}" = 1 ] || return 0
  for entry in "${metrics_urls[@]}"; do
    curl -sf --max-time 5 "${entry#*=}" >"$results/$1.${entry%%=*}.prom" ||
      echo "  $1: no metrics from ${entry%%=*}"
  done
}

# run SYSTEM SCENARIO ROUND -- crier-bench flags...
run() {
  local system=$1 scenario=$2 round=$3
  shift 4
  local name="$scenario-$system-$round"
  running=$system
  if ! "start_$system"; then
    echo "  $system $scenario round $round: did not start"
    keep_server_logs "$name"
    stop_server
    return 0
  fi
  local out="$results/$name.json"
  local salt=$((RANDOM * 32768 + RANDOM))
  if ! "$bench" "${target_args[@]}" --channel-salt "$salt" --timeout-secs 180 "$@" \
    >"$out" 2>"$results/$name.log"; then
    echo "  $system $scenario round $round: failed (see $results/$name.log)"
    keep_server_logs "$name"
  fi
  save_metrics "$name"
  stop_server
  python3 - "$out" "$system" "$scenario" <<'PY'
import json, sys
path, system, scenario = sys.argv[1:]
try:
    r = json.load(open(path))
except ValueError:
    sys.exit(0)
mem = r.get("memory") or {}
line = (f"  {system:5} {scenario:14} subs {r['connected']:>6} deliveries/s {r['deliveries_per_sec']:>12.0f} "
        f"p99 {r['latency_us']['p99']/1000:>8.1f} ms  lost {r['lost']} dup {r['duplicated']} "
        f"pss/conn {mem.get('pss_per_conn_bytes', 0):>7.0f} B")
post = r.get("post_latency_us")
if scenario == "bigroom" and post:
    line += (f"  POST p50 {post['p50']/1000:.1f} p99 {post['p99']/1000:.1f} max {post['max']/1000:.1f} ms, "
             f"{r['publish_ok']} accepted, {r.get('publish_refused', 0)} refused")
print(line)
PY
}

# keep_server_logs NAME: a failed run keeps its servers' logs beside its result.
keep_server_logs() {
  local log
  for log in "$work"/server/*.log; do
    [ -e "$log" ] && cp "$log" "$results/$1.$(basename "$log")"
  done
  return 0
}

channels=$((subscribers / 10 > 0 ? subscribers / 10 : 1))
for round in $(seq 1 "$rounds"); do
  echo "round $round"
  for system in $systems; do
    if wanted idle; then
      run "$system" idle "$round" -- --subscribers "$subscribers" --channels "$channels" --idle-secs 3 --messages 0
    fi
    if wanted fanout; then
      run "$system" fanout "$round" -- --subscribers "$subscribers" --channels 1 --messages 200 --rate max \
        --pub-connections 4 --assert-lossless
    fi
    if wanted channels; then
      for rate in 2000 5000 max; do
        run "$system" "channels-$rate" "$round" -- --subscribers "$subscribers" --channels "$channels" \
          --messages 20000 --rate "$rate" --pub-connections 32 --assert-lossless
      done
    fi
    if wanted storm; then
      run "$system" storm "$round" -- --subscribers "$subscribers" --channels "$channels" --messages 20000 \
        --rate 2000 --pub-connections 16 --reconnect-storm --assert-lossless
    fi
    # One busy room: one publisher posting in order, 50 messages/s for 10 s.
    if wanted bigroom; then
      run "$system" bigroom "$round" -- --subscribers "$subscribers" --channels 1 --messages 500 --rate 50 \
        --pub-connections 1 --assert-lossless
    fi
  done
done

if wanted sweep; then
  echo "sweep (one run per point)"
  for point in 1000 2500 5000 10000 18000; do
    [ "$point" -le "$subscribers" ] || continue
    for system in $systems; do
      run "$system" "sweep-$point" 1 -- --subscribers "$point" --channels 1 \
        --messages 100 --rate max --pub-connections 4 --assert-lossless
    done
  done
fi

if wanted ingest; then
  echo "ingest"
  bench/ingest.sh "$rounds" 8 64 | tee "$results/ingest.txt"
  if command -v perf >/dev/null; then
    echo "where one POST's CPU goes"
    bench/profile-post.sh 8 | tee "$results/post-profile.md"
  fi
fi

if [ -z "${BENCH_SYSTEMS:-}${BENCH_ONLY:-}${BENCH_SUBSCRIBERS:-}" ]; then
  python3 bench/report.py "$results" BENCHMARKS.md
  echo "wrote BENCHMARKS.md and docs/bench-sweep.svg"
else
  echo "a partial run: BENCHMARKS.md left alone (bench/report.py $results OUT.md renders it)"
fi
