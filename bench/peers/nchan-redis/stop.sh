#!/usr/bin/env bash
# Stops what start.sh started with the same DIR: nginx, then Redis.
#   bench/peers/nchan-redis/stop.sh DIR
set -euo pipefail
dir=$1
here=$(cd "$(dirname "$0")" && pwd)
"$here/../nchan/stop.sh" "$dir" || true
[ -s "$dir/redis.pid" ] || exit 0
pid=$(cat "$dir/redis.pid")
kill "$pid" 2>/dev/null || exit 0
for _ in $(seq 1 100); do
  kill -0 "$pid" 2>/dev/null || exit 0
  sleep 0.1
done
kill -9 "$pid" 2>/dev/null || true
