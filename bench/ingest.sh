#!/usr/bin/env bash
# Ingest throughput: POST/s of the all-in-one crier with durable acknowledgements
# (flush before 201, the default) and without, alternating runs side by side.
#
#   bench/ingest.sh [runs] [seconds] [connections]
#
# Needs `wrk` (Debian package `wrk`). Prints one line per run and the medians.
set -euo pipefail

runs=${1:-3}
seconds=${2:-10}
connections=${3:-64}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet --bin crier
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# One run: a fresh crier on a fresh data dir; prints requests/s.
run_once() {
  local durable=$1 port dir pid rps
  port=$(free_port)
  dir="$work/data-$durable-$RANDOM"
  RUST_LOG=warn ./target/release/crier --listen "127.0.0.1:$port" --data-dir "$dir" \
    --durable-ack "$durable" >"$work/crier.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.1
  done
  rps=$(wrk -t2 -c"$connections" -d"${seconds}s" -s bench/post.lua "http://127.0.0.1:$port" |
    tee "$work/wrk.out" | awk '/Requests\/sec/ {print $2}')
  if grep -q "Non-2xx" "$work/wrk.out"; then
    echo "errors during the run:" >&2
    cat "$work/wrk.out" >&2
    exit 1
  fi
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  echo "$rps"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

durable=()
memory=()
for run in $(seq 1 "$runs"); do
  d=$(run_once true)
  m=$(run_once false)
  echo "run $run: durable ${d} POST/s, in-memory ${m} POST/s"
  durable+=("$d")
  memory+=("$m")
done
d_median=$(printf '%s\n' "${durable[@]}" | median)
m_median=$(printf '%s\n' "${memory[@]}" | median)
echo "median of $runs runs, $connections connections, ${seconds}s each:"
echo "  durable (flush before 201): $d_median POST/s"
echo "  in-memory acknowledgement:  $m_median POST/s"
