#!/usr/bin/env bash
# Where the CPU of one POST goes: the all-in-one crier (durable
# acknowledgements, no subscribers) and a bare actix-web handler of the same
# POST (bench/src/bin/bare-actix.rs), each under the ingest load of
# bench/ingest.sh (wrk, 64 connections), one after the other. For each, the
# process's CPU time over a measured window divided by the POSTs answered in it,
# split by what `perf record` sampled in that window: by thread, and by the
# code the samples fell in. Prints Markdown.
#
#   bench/profile-post.sh [seconds]        (default 8)
#
#   BENCH_PROFILE_KEEP=1  keeps the recordings (the directory is printed)
#
# Needs wrk and perf (Debian: wrk linux-perf).
set -euo pipefail

seconds=${1:-8}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh

for tool in wrk perf; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
cargo build --release --quiet -p crier -p crier-bench
work=$(mktemp -d)
[ -z "${BENCH_PROFILE_KEEP:-}" ] || echo "keeping the recordings in $work" >&2
cleanup() {
  # shellcheck disable=SC2046 # one pid per word
  stop_pids $(jobs -p)
  [ -n "${BENCH_PROFILE_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# cpu_ticks PID: user+system clock ticks of the whole process so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# profile NAME PID BASE: loads BASE for $seconds + 2 s, records PID for the
# middle $seconds, and writes NAME.perf (the report) and NAME.txt (POST/s,
# CPU ticks in the window, ticks per second, window seconds).
profile() {
  local name=$1 pid=$2 base=$3 before after
  BENCH_TARGET=crier wrk -t2 -c64 -d"$((seconds + 2))s" -s bench/post.lua "$base" \
    >"$work/$name.wrk" &
  local load=$!
  sleep 1
  before=$(cpu_ticks "$pid")
  perf record -e cpu-clock -F 499 -g -p "$pid" -o "$work/$name.data" -- sleep "$seconds" 2>/dev/null >/dev/null
  after=$(cpu_ticks "$pid")
  wait "$load"
  local rps
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/$name.wrk")
  echo "$rps $(( after - before )) $(getconf CLK_TCK) $seconds" >"$work/$name.txt"
  perf report -i "$work/$name.data" --no-children --stdio --sort comm,dso,sym -g none \
    --percent-limit 0 --field-separator ';' 2>/dev/null >"$work/$name.perf"
}

port=$(free_port)
RUST_LOG=warn ./target/release/crier --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --post-rate-per-sec 0 >"$work/crier.out" 2>"$work/crier.log" &
crier=$!
wait_ready "http://127.0.0.1:$port"
profile crier "$crier" "http://127.0.0.1:$port"
stop_pids "$crier"

start_small_server bare-actix "$work"
profile bare "$small_pid" "http://127.0.0.1:$small_port"
stop_pids "$small_pid"

python3 bench/post_profile.py "$work/crier" "$work/bare"
