#!/usr/bin/env bash
# History pages on a large stream: a 3-node nats-server cluster, a
# chat-service with --nats-url, the stream filled with channels × per-channel
# messages (bench/src/bin/nats-fill.rs), then pages of 100 after a random id
# of a random channel (bench/history.lua) read through the chat-service, a
# few runs; prints wrk's latency percentiles of each run.
#
#   bench/nats-history.sh [runs] [seconds] [connections] [channels] [per-channel]
#
# Needs wrk and nats-server (CRIER_NATS_SERVER or on PATH).
set -euo pipefail

runs=${1:-3}
seconds=${2:-10}
connections=${3:-16}
channels=${4:-1000}
per_channel=${5:-1000}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet -p chat-service -p crier-bench
work=$(mktemp -d)
cleanup() {
  # shellcheck disable=SC2046 # one pid per word
  stop_pids $(jobs -p)
  rm -rf "$work"
}
trap cleanup EXIT

start_nats "$work/nats"
start_chat_service "$work/nats" "$nats_mqtt_port" --nats-url "$nats_urls" --mqtt-posts false
# It makes the stream first, which a cluster just formed may take a while to allow.
wait_ready "http://127.0.0.1:$chat_port" || wait_ready "http://127.0.0.1:$chat_port" ||
  wait_ready "http://127.0.0.1:$chat_port"
./target/release/nats-fill --nats-url "${nats_urls%%,*}" --channels "$channels" --per-channel "$per_channel"
for run in $(seq 1 "$runs"); do
  BENCH_CHANNELS=$channels BENCH_PER_CHANNEL=$per_channel \
    wrk -t"$((connections < 2 ? 1 : 2))" -c"$connections" -d"${seconds}s" --latency -s bench/history.lua \
    "http://127.0.0.1:$chat_port" >"$work/wrk.out"
  if grep -q "Non-2xx\|Socket errors" "$work/wrk.out" || ! grep -q "short pages: 0$" "$work/wrk.out"; then
    cat "$work/wrk.out" >&2
    exit 1
  fi
  echo "run $run: $(awk '/Requests\/sec/ {print $2}' "$work/wrk.out") pages/s;" \
    "$(awk '$1 ~ /^(50|90|99)%$/ {printf "p%s %s ", substr($1, 1, length($1) - 1), $2}' "$work/wrk.out")"
done
