#!/usr/bin/env bash
# Starts Nchan with Redis storage on 127.0.0.1:PORT, its files in DIR: a
# redis-server on a free loopback port that appends every write to its log
# and syncs it before answering (appendonly, appendfsync always), and the nginx
# of ../nchan with its channels and messages kept in that Redis. Prints the
# nginx master's pid and Redis's, comma-separated (as crier-bench
# --server-pid takes them).
#   bench/peers/nchan-redis/start.sh PORT DIR
set -euo pipefail
port=$1
dir=$2
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
source "$here/../../lib.sh"
command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
mkdir -p "$dir/redis"
redis_port=$(free_port)
cat >"$dir/redis.conf" <<CONF
bind 127.0.0.1
port $redis_port
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir/redis
save ""
appendonly yes
appendfsync always
CONF
redis-server "$dir/redis.conf"
wait_port "$redis_port"
for _ in $(seq 1 50); do
  [ -s "$dir/redis.pid" ] && break
  sleep 0.1
done

cat >"$dir/redis.nginx" <<CONF
    upstream nchan_redis {
        nchan_redis_server "redis://127.0.0.1:$redis_port";
    }
    # Given here once for both locations, which inherit it only when told to.
    nchan_redis_pass nchan_redis;
    nchan_redis_pass_inheritable on;
CONF
sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" \
  -e "/nchan_shared_memory_size/r $dir/redis.nginx" \
  "$here/../nchan/nginx.conf.in" >"$dir/nginx.conf"
grep -q nchan_redis_pass "$dir/nginx.conf" || { echo "could not add Redis to the Nchan config" >&2; exit 1; }
nginx -p "$dir" -c "$dir/nginx.conf"
for _ in $(seq 1 100); do
  [ -s "$dir/nginx.pid" ] && curl -s -o /dev/null "http://127.0.0.1:$port/" && break
  sleep 0.05
done
echo "$(cat "$dir/nginx.pid"),$(cat "$dir/redis.pid")"
