#!/usr/bin/env bash
# Runs every benchmark scenario against the all-in-one crier and against Nchan,
# side by side (the two alternate within each round), and writes BENCHMARKS.md.
#
#   bench/run.sh [rounds]            (default 3; results in target/bench/)
#
# Needs nginx with libnginx-mod-nchan and wrk (Debian: nginx libnginx-mod-nchan
# wrk). Every server runs on loopback with a fresh data dir, started anew for
# each run; subscribers connect from 127.0.0.2-9.
set -euo pipefail

rounds=${1:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh
results=target/bench
rm -rf "$results" && mkdir -p "$results"
cargo build --release --quiet -p crier -p crier-bench
bench=./target/release/crier-bench
work=$(mktemp -d)
server_pid=""
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT


start_crier() {
  port=$(free_port)
  RUST_LOG=warn ./target/release/crier --listen "127.0.0.1:$port" --data-dir "$work/data-$RANDOM" \
    --post-rate-per-sec 0 --max-streams-per-address 0 >"$work/crier.out" 2>"$work/crier.log" &
  server_pid=$!
  wait_ready "http://127.0.0.1:$port"
  target_args=(--sub-url "http://127.0.0.1:$port/channels/{channel}/events"
    --pub-url "http://127.0.0.1:$port/channels/{channel}/messages"
    --server-pid "$server_pid")
}

start_nchan() {
  port=$(free_port)
  server_pid=$(bench/peers/nchan/start.sh "$port" "$work/nchan")
  target_args=(--sub-url "http://127.0.0.1:$port/sub/{channel}"
    --pub-url "http://127.0.0.1:$port/pub/{channel}"
    --pub-body '{text}' --pub-content-type text/plain
    --server-pid "$server_pid")
}

stop_server() {
  if [ -d "$work/nchan" ]; then
    bench/peers/nchan/stop.sh "$work/nchan" || true
    rm -rf "$work/nchan"
  elif [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
  rm -rf "$work"/data-*
}

# run SYSTEM SCENARIO ROUND -- crier-bench flags...
run() {
  local system=$1 scenario=$2 round=$3
  shift 4
  "start_$system"
  local out="$results/$scenario-$system-$round.json"
  local salt=$((RANDOM * 32768 + RANDOM))
  if ! "$bench" "${target_args[@]}" --channel-salt "$salt" --timeout-secs 180 "$@" \
    >"$out" 2>"$results/$scenario-$system-$round.log"; then
    echo "  $system $scenario round $round: failed (see $results/$scenario-$system-$round.log)"
  fi
  stop_server
  python3 - "$out" "$system" "$scenario" <<'PY'
import json, sys
path, system, scenario = sys.argv[1:]
try:
    r = json.load(open(path))
except ValueError:
    sys.exit(0)
mem = r.get("memory") or {}
print(f"  {system:5} {scenario:14} subs {r['connected']:>6} deliveries/s {r['deliveries_per_sec']:>12.0f} "
      f"p99 {r['latency_us']['p99']/1000:>8.1f} ms  lost {r['lost']} dup {r['duplicated']} "
      f"pss/conn {mem.get('pss_per_conn_bytes', 0):>7.0f} B")
PY
}

for round in $(seq 1 "$rounds"); do
  echo "round $round"
  for system in crier nchan; do
    run "$system" idle "$round" -- --subscribers 10000 --channels 1000 --idle-secs 3 --messages 0
    run "$system" fanout "$round" -- --subscribers 10000 --channels 1 --messages 200 --rate max --pub-connections 4 --assert-lossless
    for rate in 2000 5000 max; do
      run "$system" "channels-$rate" "$round" -- --subscribers 10000 --channels 1000 \
        --messages 20000 --rate "$rate" --pub-connections 32 --assert-lossless
    done
    run "$system" storm "$round" -- --subscribers 10000 --channels 1000 --messages 20000 \
      --rate 2000 --pub-connections 16 --reconnect-storm --assert-lossless
  done
done

echo "sweep (one run per point)"
for subscribers in 1000 2500 5000 10000 18000; do
  for system in crier nchan; do
    run "$system" "sweep-$subscribers" 1 -- --subscribers "$subscribers" --channels 1 \
      --messages 100 --rate max --pub-connections 4 --assert-lossless
  done
done

echo "ingest"
bench/ingest.sh "$rounds" 8 64 | tee "$results/ingest.txt"

python3 bench/report.py "$results" BENCHMARKS.md
echo "wrote BENCHMARKS.md and docs/bench-sweep.svg"
