#!/usr/bin/env bash
# Ingest throughput, side by side: POST/s of the all-in-one crier with durable
# acknowledgements (flush before 201, the default), of crier answering from
# memory (--durable-ack false), and of Nchan (memory only), alternating runs.
#
#   bench/ingest.sh [runs] [seconds] [connections]
#
# Needs `wrk` and, for Nchan, `nginx` with `libnginx-mod-nchan`. Prints one line
# per run and the medians.
set -euo pipefail

runs=${1:-3}
seconds=${2:-10}
connections=${3:-64}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet --bin crier
work=$(mktemp -d)
cleanup() {
  bench/peers/nchan/stop.sh "$work/nchan" 2>/dev/null || true
  kill $(jobs -p) 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT


# wrk against a base URL (target crier or nchan); prints requests/s, fails on any error.
load() {
  local base=$1 target=$2 rps
  rps=$(BENCH_TARGET=$target wrk -t2 -c"$connections" -d"${seconds}s" -s bench/post.lua "$base" |
    tee "$work/wrk.out" | awk '/Requests\/sec/ {print $2}')
  if grep -q "Non-2xx\|Socket errors" "$work/wrk.out"; then
    echo "errors during the run:" >&2
    cat "$work/wrk.out" >&2
    exit 1
  fi
  echo "$rps"
}

crier_run() {
  local durable=$1 port pid rps
  port=$(free_port)
  RUST_LOG=warn ./target/release/crier --listen "127.0.0.1:$port" \
    --data-dir "$work/data-$durable-$RANDOM" --durable-ack "$durable" \
    --post-rate-per-sec 0 >"$work/crier.out" 2>"$work/crier.log" &
  pid=$!
  wait_ready "http://127.0.0.1:$port"
  rps=$(load "http://127.0.0.1:$port" crier)
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  echo "$rps"
}

nchan_run() {
  local port rps
  port=$(free_port)
  bench/peers/nchan/start.sh "$port" "$work/nchan" >/dev/null
  rps=$(load "http://127.0.0.1:$port" nchan)
  bench/peers/nchan/stop.sh "$work/nchan"
  rm -rf "$work/nchan"
  echo "$rps"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

durable=()
memory=()
nchan=()
for run in $(seq 1 "$runs"); do
  d=$(crier_run true)
  n=$(nchan_run)
  m=$(crier_run false)
  echo "run $run: crier durable ${d} POST/s, nchan ${n} POST/s, crier in-memory ${m} POST/s"
  durable+=("$d")
  nchan+=("$n")
  memory+=("$m")
done
echo "median of $runs runs, $connections connections, ${seconds}s each:"
echo "  crier, durable (flush before 201): $(printf '%s\n' "${durable[@]}" | median) POST/s"
echo "  crier, in-memory acknowledgement:  $(printf '%s\n' "${memory[@]}" | median) POST/s"
echo "  nchan (memory only):               $(printf '%s\n' "${nchan[@]}" | median) POST/s"
