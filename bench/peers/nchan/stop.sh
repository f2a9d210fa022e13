#!/usr/bin/env bash
# Stops the Nchan started by start.sh with the same DIR.
#   bench/peers/nchan/stop.sh DIR
set -euo pipefail
dir=$1
[ -s "$dir/nginx.pid" ] || exit 0
nginx -p "$dir" -c "$dir/nginx.conf" -s quit 2>/dev/null || kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
for _ in $(seq 1 100); do
  [ -e "$dir/nginx.pid" ] || exit 0
  sleep 0.05
done
