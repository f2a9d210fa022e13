#!/usr/bin/env bash
# Starts Nchan on 127.0.0.1:PORT with its files in DIR; prints the master's pid.
#   bench/peers/nchan/start.sh PORT DIR
set -euo pipefail
port=$1
dir=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir"
sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" "$here/nginx.conf.in" >"$dir/nginx.conf"
nginx -p "$dir" -c "$dir/nginx.conf"
for _ in $(seq 1 100); do
  [ -s "$dir/nginx.pid" ] && curl -s -o /dev/null "http://127.0.0.1:$port/" && break
  sleep 0.05
done
cat "$dir/nginx.pid"
