#!/usr/bin/env bash
# A Crier cluster on this machine, to try scaling out: two Mosquitto brokers
# bridged on crier/#, two chat-service shards (each owning the channels the
# front hashes to it), three broadcast-sse nodes split across the two brokers,
# and nginx in front (deploy/nginx/cluster.conf). Every port is a free one on
# 127.0.0.1.
#
#   deploy/local-cluster.sh up       start it all; prints "front: http://127.0.0.1:PORT"
#   deploy/local-cluster.sh status   each process, and its /readyz
#   deploy/local-cluster.sh down     stop exactly what `up` started, by pid
#   deploy/local-cluster.sh restart NAME   start a shard or node again (after
#                                    `kill -9` on it, say), same port and data
#
# CRIER_CLUSTER_DIR   state: pids, ports, logs, data (default target/cluster)
# CRIER_BIN_DIR       where chat-service and broadcast-sse are (default
#                     target/release; build them with `cargo build --release`)
# CRIER_CHAT_SERVICE, CRIER_BROADCAST_SSE   the two binaries, if elsewhere
#
# Needs mosquitto and nginx (Debian: mosquitto nginx).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${CRIER_CLUSTER_DIR:-$root/target/cluster}
bin_dir=${CRIER_BIN_DIR:-$root/target/release}
chat_service=${CRIER_CHAT_SERVICE:-$bin_dir/chat-service}
broadcast_sse=${CRIER_BROADCAST_SSE:-$bin_dir/broadcast-sse}
processes=$dir/processes   # one line per process: name pid port
ports=$dir/ports           # broker_a broker_b front
wait_secs=20
PATH="$PATH:/usr/sbin:/sbin"

die() {
  echo "local-cluster: $*" >&2
  exit 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_until SECONDS WHAT COMMAND...: runs COMMAND every 0.1 s until it succeeds.
wait_until() {
  local secs=$1 what=$2
  shift 2
  local tries=$((secs * 10))
  while [ "$tries" -gt 0 ]; do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
    tries=$((tries - 1))
  done
  die "$what: not within ${secs} s (logs in $dir/logs)"
}

port_open() {
  python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.5)' "$1"
}

ready() {
  curl -sf -m 2 -o /dev/null "http://127.0.0.1:$1/readyz"
}

# started NAME PID PORT: remembers a process for status and down.
started() {
  echo "$1 $2 $3" >>"$processes"
}

is_up() {
  [ -s "$processes" ] || return 1
  local name pid port
  while read -r name pid port; do
    if kill -0 "$pid" 2>/dev/null; then
      return 0
    fi
  done <"$processes"
  return 1
}

start_broker() {
  local name=$1 port=$2 bridge_to=${3:-}
  local conf=$dir/$name.conf
  {
    echo "listener $port 127.0.0.1"
    echo "allow_anonymous true"
    echo "persistence false"
    echo "max_queued_messages 100000"
    echo "log_dest file $dir/logs/$name.log"
    [ "$(id -u)" = 0 ] && echo "user root"
    if [ -n "$bridge_to" ]; then
      echo "connection $name-bridge"
      echo "address 127.0.0.1:$bridge_to"
      echo "topic crier/# both 1"
      echo "cleansession false"
      echo "try_private true"
      echo "restart_timeout 1 5"
    fi
  } >"$conf"
  mosquitto -c "$conf" >/dev/null 2>&1 &
  started "$name" $! "$port"
  wait_until "$wait_secs" "$name listening" port_open "$port"
}

start_shard() {
  local name=$1 port=$2 broker=$3 front=$4
  RUST_LOG=info "$chat_service" --listen "127.0.0.1:$port" \
    --mqtt-url "mqtt://127.0.0.1:$broker" --data-dir "$dir/data/$name" \
    --post-rate-per-sec 0 --mqtt-post-forward "http://127.0.0.1:$front" \
    >/dev/null 2>"$dir/logs/$name.log" &
  started "$name" $! "$port"
}

start_node() {
  local name=$1 port=$2 broker=$3 front=$4
  RUST_LOG=info "$broadcast_sse" --listen "127.0.0.1:$port" \
    --mqtt-url "mqtt://127.0.0.1:$broker" --history-url "http://127.0.0.1:$front" \
    --max-streams-per-address 0 \
    >/dev/null 2>"$dir/logs/$name.log" &
  started "$name" $! "$port"
}

# The front: deploy/nginx/cluster.conf with this cluster's port, shards and nodes.
start_front() {
  local port=$1 shards=$2 nodes=$3
  mkdir -p "$dir/nginx/temp"
  awk -v listen="    listen 127.0.0.1:$port;" -v shards="$shards" -v nodes="$nodes" '
    /# shard$/ { if (!s++) printf "%s", shards; next }
    /# node$/ { if (!n++) printf "%s", nodes; next }
    /^    listen / { print listen; next }
    { print }
  ' "$root/deploy/nginx/cluster.conf" >"$dir/nginx/cluster.conf"
  {
    [ "$(id -u)" = 0 ] && echo "user root;"
    echo "worker_processes auto;"
    echo "daemon off;"
    echo "pid $dir/nginx/nginx.pid;"
    echo "error_log $dir/logs/nginx.log warn;"
    echo "events { worker_connections 16384; }"
    echo "http {"
    echo "  access_log off;"
    for temp in client_body proxy fastcgi uwsgi scgi; do
      echo "  ${temp}_temp_path $dir/nginx/temp/$temp;"
    done
    echo "  include $dir/nginx/cluster.conf;"
    echo "}"
  } >"$dir/nginx/nginx.conf"
  nginx -t -q -p "$dir/nginx" -c "$dir/nginx/nginx.conf" 2>>"$dir/logs/nginx.log" ||
    die "nginx refused the front's configuration (see $dir/logs/nginx.log)"
  nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" >/dev/null 2>>"$dir/logs/nginx.log" &
  started front $! "$port"
  wait_until "$wait_secs" "the front listening" port_open "$port"
}

up() {
  for tool in mosquitto nginx curl python3; do
    command -v "$tool" >/dev/null || die "$tool is needed (Debian: apt-get install mosquitto nginx curl python3)"
  done
  for binary in "$chat_service" "$broadcast_sse"; do
    [ -x "$binary" ] || die "$binary is missing: cargo build --release (or set CRIER_BIN_DIR)"
  done
  if is_up; then
    die "already up (CRIER_CLUSTER_DIR=$dir); run down first"
  fi
  rm -rf "$dir"
  mkdir -p "$dir/logs" "$dir/data"
  : >"$processes"
  # Whatever started is stopped again if the rest does not come up.
  trap 'echo "local-cluster: up failed; stopping what started" >&2; down >/dev/null' EXIT

  local broker_a broker_b front shard_ports node_ports
  broker_a=$(free_port)
  broker_b=$(free_port)
  front=$(free_port)
  shard_ports=("$(free_port)" "$(free_port)")
  node_ports=("$(free_port)" "$(free_port)" "$(free_port)")

  echo "$broker_a $broker_b $front" >"$ports"
  start_broker broker-a "$broker_a"
  start_broker broker-b "$broker_b" "$broker_a"
  # Both shards take MQTT posts on the same broker: a shared subscription
  # shares posts among the subscribers of one broker only.
  local shards="" nodes="" i
  for i in 0 1; do
    start_shard "shard-$((i + 1))" "${shard_ports[$i]}" "$broker_a" "$front"
    shards+="    server 127.0.0.1:${shard_ports[$i]} max_fails=0;"$'\n'
  done
  local node_brokers=("$broker_a" "$broker_b" "$broker_b") # node-1 on A, 2 and 3 on B
  for i in 0 1 2; do
    start_node "node-$((i + 1))" "${node_ports[$i]}" "${node_brokers[$i]}" "$front"
    nodes+="    server 127.0.0.1:${node_ports[$i]};"$'\n'
  done
  start_front "$front" "$shards" "$nodes"
  for i in 0 1; do
    wait_until "$wait_secs" "shard-$((i + 1)) ready" ready "${shard_ports[$i]}"
  done
  for i in 0 1 2; do
    wait_until "$wait_secs" "node-$((i + 1)) ready" ready "${node_ports[$i]}"
  done
  trap - EXIT
  echo "front: http://127.0.0.1:$front"
}

status() {
  [ -s "$processes" ] || die "not up (CRIER_CLUSTER_DIR=$dir)"
  local name pid port state readiness
  while read -r name pid port; do
    if kill -0 "$pid" 2>/dev/null; then state=running; else state=stopped; fi
    case $name in
      shard-* | node-*)
        readiness=$(curl -s -m 2 "http://127.0.0.1:$port/readyz" 2>/dev/null || echo "no answer")
        ;;
      front)
        readiness=$(curl -s -m 2 "http://127.0.0.1:$port/healthz" 2>/dev/null || echo "no answer")
        ;;
      *)
        if port_open "$port" 2>/dev/null; then readiness=listening; else readiness="not listening"; fi
        ;;
    esac
    printf '%-9s pid %-7s 127.0.0.1:%-5s %-8s %s\n' "$name" "$pid" "$port" "$state" "$readiness"
  done <"$processes"
}

down() {
  [ -s "$processes" ] || { echo "local-cluster: not up"; return 0; }
  local name pid port pids=()
  # The front first, then nodes and shards, then the brokers.
  while read -r name pid port; do
    pids=("$pid" "${pids[@]}")
  done <"$processes"
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  local tries=100
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$tries" -gt 0 ]; do
      sleep 0.1
      tries=$((tries - 1))
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  : >"$processes"
  echo "local-cluster: down"
}

# restart NAME: a shard or node again, on its port, broker and data.
restart() {
  local target=$1 name pid port broker_a broker_b front found=""
  [ -s "$processes" ] || die "not up (CRIER_CLUSTER_DIR=$dir)"
  read -r broker_a broker_b front <"$ports"
  while read -r name pid port; do
    if [ "$name" = "$target" ]; then
      found=$port
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done <"$processes"
  [ -n "$found" ] || die "no process named $target"
  grep -v "^$target " "$processes" >"$processes.new" || true
  mv "$processes.new" "$processes"
  case $target in
    shard-*) start_shard "$target" "$found" "$broker_a" "$front" ;;
    node-1) start_node "$target" "$found" "$broker_a" "$front" ;;
    node-*) start_node "$target" "$found" "$broker_b" "$front" ;;
    *) die "only shards and nodes restart" ;;
  esac
  wait_until "$wait_secs" "$target ready" ready "$found"
  echo "local-cluster: $target restarted"
}

case ${1:-} in
  up) up ;;
  status) status ;;
  down) down ;;
  restart) restart "${2:?restart which process (shard-1, node-2, ...)?}" ;;
  *)
    echo "usage: $0 up|status|down|restart NAME" >&2
    exit 2
    ;;
esac
