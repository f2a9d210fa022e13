#!/usr/bin/env bash
# Checks the running API against its OpenAPI document with schemathesis (from
# PyPI): no 5xx, and every answer matches the document. Starts its own all-in-one
# crier on a free loopback port with a fresh data dir; the endless SSE routes
# are left out (a valid request opens a stream that never ends, which
# schemathesis would wait on for good); their bad input is checked by the
# bad-input table of the end-to-end tests.
#
#   .ci/schemathesis.sh [crier binary]     (default: target/debug/crier)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

crier=${1:-target/debug/crier}
work=$(mktemp -d)
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"

port=$(free_port)
RUST_LOG=warn "$crier" --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --post-rate-per-sec 0 >"$work/crier.out" 2>"$work/crier.log" &
pid=$!
wait_ready "http://127.0.0.1:$port"

"$work/venv/bin/schemathesis" --config-file .ci/schemathesis.toml run \
  "http://127.0.0.1:$port/openapi.json" \
  --exclude-path '/channels/{channel}/events' \
  --exclude-path '/events' \
  --max-examples 100 \
  --generation-deterministic \
  --report-dir "$work/report" \
  | tee "$work/run.txt"
grep -E "generated" "$work/run.txt" || true
