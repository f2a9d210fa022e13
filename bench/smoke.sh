#!/usr/bin/env bash
# A small run of the benchmark harness against the all-in-one crier: 200
# subscribers over 10 channels, 2,000 messages. It checks correctness only
# (every subscriber gets every message once, in order, and the broker
# acknowledges every message); no timing is asserted.
#
#   bench/smoke.sh        (debug builds; the release ones are for bench/run.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

cargo build --quiet -p crier -p crier-bench
work=$(mktemp -d)
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(free_port)
RUST_LOG=warn target/debug/crier --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --post-rate-per-sec 0 --max-streams-per-address 0 >"$work/crier.out" 2>"$work/crier.log" &
pid=$!
wait_ready "http://127.0.0.1:$port"

target/debug/crier-bench \
  --sub-url "http://127.0.0.1:$port/channels/{channel}/events" \
  --pub-url "http://127.0.0.1:$port/channels/{channel}/messages" \
  --subscribers 200 --channels 10 --messages 2000 --timeout-secs 120 \
  --assert-lossless >"$work/result.json"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("smoke:", r["deliveries"], "deliveries,", r["lost"], "lost,", r["duplicated"], "duplicated,", r["out_of_order"], "out of order")' "$work/result.json"

# Every stored message also reached the broker: the outbox drains to 0.
outbox=unknown
for _ in $(seq 1 100); do
  outbox=$(curl -sf "http://127.0.0.1:$port/readyz" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["outbox"])') || outbox=unknown
  [ "$outbox" = 0 ] && break
  sleep 0.1
done
if [ "$outbox" != 0 ]; then
  echo "smoke: the broker did not acknowledge every message (outbox: $outbox)" >&2
  exit 1
fi
echo "smoke: outbox empty"
