#!/usr/bin/env bash
# Runs mq-config/install.yml for real against this machine and checks the broker it
# sets up, without touching a broker that is already here: its own free loopback
# ports, its own config/data/pid/log directories in a temporary directory, and the
# pid-file-managed `mosquitto -d` (never the system service).
#
#   mq-config/test/run.sh [BIN_DIR]
#
# BIN_DIR (or CRIER_BIN_DIR) holds the chat-service and broadcast-sse binaries
# (default target/debug; the e2e-* copies `cargo test` builds count too).
# ansible-playbook must be on PATH. Must run as root: the playbook installs packages
# and gives files to the broker's user.
#
# Checks, in order: the play refuses to run without crier_mqtt_password, and with the
# poster and read-only users sharing a name; the README's invocation (only
# crier_mqtt_password in secrets.yml) succeeds, sets up `crier` alone and the broker
# accepts it; a run adding the optional users and listeners succeeds and the next
# reports changed=0; anonymous clients are refused, `crier` is accepted and kept to
# crier/#, the read-only user can watch but not publish; the WebSocket and TLS
# listeners answer on loopback only; chat-service and broadcast-sse connect with
# mqtt://crier:<password>@127.0.0.1:<port> and a POSTed message reaches an SSE
# client and an MQTT watcher; the plain mosquitto.conf and bridge.conf examples
# start and the bridge carries crier/# both ways; a changed password is applied by
# a reload (same broker process) and the run after it is quiet again; the README's
# invocation run again removes the optional users; every broker it started is
# stopped at the end, on failure too.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$here/.." && pwd)
bin_dir=${1:-${CRIER_BIN_DIR:-$root/target/debug}}
bin_dir=$(cd "$bin_dir" && pwd)

say() { printf '== %s\n' "$*"; }
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}

# `cargo build` makes chat-service, `cargo test` the same main.rs as e2e-chat-service:
# take the newer of the two.
find_bin() {
  local plain=$bin_dir/$1 e2e=$bin_dir/e2e-$1
  if [ -x "$plain" ] && { [ ! -x "$e2e" ] || [ "$plain" -nt "$e2e" ]; }; then
    echo "$plain"
  elif [ -x "$e2e" ]; then
    echo "$e2e"
  else
    fail "no $1 (or e2e-$1) in $bin_dir: build it first (cargo build)"
  fi
}
chat_bin=$(find_bin chat-service)
sse_bin=$(find_bin broadcast-sse)
for tool in ansible-playbook mosquitto_pub mosquitto_sub curl python3; do
  command -v "$tool" >/dev/null || fail "$tool is not on PATH"
done
[ "$(id -u)" = 0 ] || fail "run as root (the playbook installs packages and chowns files)"

work=$(mktemp -d)
# The broker drops to its own user when started as root: it must reach its files.
chmod 0755 "$work"
pids=()
pid_file=$work/run/mosquitto.pid

stop_broker() {
  local pid
  [ -f "$pid_file" ] || return 0
  pid=$(cat "$pid_file")
  # Only the broker started from this test's configuration.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$work/etc/crier.conf" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do
    [ -d "/proc/$pid" ] || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  stop_broker
  if [ "$status" != 0 ]; then
    for log in "$work"/chat-service.log "$work"/broadcast-sse.log "$work"/*.conf.log \
      "$work"/log/mosquitto.log; do
      [ -f "$log" ] || continue
      echo "--- $log (last 40 lines)" >&2
      tail -n 40 "$log" >&2
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_time=$SECONDS

# Free loopback ports, reserved all at once so they differ from each other.
read -r mqtt_port ws_port tls_port chat_port sse_port plain_port bridge_port < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
watch_password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
poster_password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')

mkdir -p "$work/tls"
have_tls=false
if command -v openssl >/dev/null; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>"$work/openssl.log"
  chgrp mosquitto "$work/tls/key.pem" 2>/dev/null || true
  chmod 0640 "$work/tls/key.pem"
  have_tls=true
fi

# Where this test's broker lives (its own port and directories, the daemon mode):
# given to every run, so that the README's invocation is otherwise unchanged.
cat >"$work/place.yml" <<EOF
crier_mqtt_port: $mqtt_port
crier_mqtt_bind: 127.0.0.1
crier_mqtt_config_dir: $work/etc
crier_mqtt_data_dir: $work/data
crier_mqtt_pid_file: $pid_file
crier_mqtt_log_dir: $work/log
crier_mqtt_service_manager: daemon
EOF
# The optional users and listeners, added after the README's run.
cat >"$work/settings.yml" <<EOF
crier_mqtt_websockets_port: $ws_port
crier_mqtt_readonly_user: watcher
crier_mqtt_poster_user: poster
EOF
if $have_tls; then
  cat >>"$work/settings.yml" <<EOF
crier_mqtt_tls_port: $tls_port
crier_mqtt_tls_cert: $work/tls/cert.pem
crier_mqtt_tls_key: $work/tls/key.pem
EOF
fi
# secrets.yml as the README writes it: crier_mqtt_password and nothing else.
readme_secrets() {
  (
    umask 077
    printf 'crier_mqtt_password: "%s"\n' "$1" >"$work/secrets.yml"
  )
}
# secrets.yml with the optional users' passwords too.
write_secrets() {
  (
    umask 077
    printf 'crier_mqtt_password: "%s"\ncrier_mqtt_readonly_password: "%s"\n' \
      "$1" "$watch_password" >"$work/secrets.yml"
    printf 'crier_mqtt_poster_password: "%s"\n' "$poster_password" >>"$work/secrets.yml"
  )
}

export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_PIPELINING=1
export ANSIBLE_LOCAL_TEMP=$work/ansible-tmp ANSIBLE_RETRY_FILES_ENABLED=0
run=0
# Runs the playbook as the README does, plus place.yml; leaves its output in
# $work/play-N.log and the host's PLAY RECAP counters in $recap ("ok=.. changed=..
# ... failed=..").
play() {
  run=$((run + 1))
  local log=$work/play-$run.log status=0
  (cd "$here" && timeout 300 ansible-playbook -i inventory/local.ini install.yml \
    -e "@$work/place.yml" "$@") \
    >"$log" 2>&1 || status=$?
  recap=$(sed -n '/^PLAY RECAP/,$p' "$log" | grep '^localhost' || true)
  return "$status"
}
counter() { sed -n "s/.*[[:space:]]$1=\([0-9]*\).*/\1/p" <<<"$recap"; }
show_log() { cat "$work/play-$run.log" >&2; }

# Every MQTT client is bounded (timeout; -W for mosquitto_sub). MQTT v5, so that a
# refused publish is reported ("Not authorized") instead of silently dropped.
pub() { timeout 10 mosquitto_pub -h 127.0.0.1 -p "$mqtt_port" -V 5 -q 1 "$@" 2>&1; }

# The users of the password file and of the ACL must both be exactly $1
# (space-separated, sorted).
check_users() {
  local got
  got=$(cut -d: -f1 "$work/etc/crier.passwd" | sort | xargs)
  [ "$got" = "$1" ] || fail "crier.passwd holds the users '$got', not '$1'"
  got=$(sed -n 's/^user //p' "$work/etc/crier.acl" | sort | xargs)
  [ "$got" = "$1" ] || fail "crier.acl names the users '$got', not '$1'"
}

# refused WHAT MESSAGE [play arguments...]: the play fails, says MESSAGE, and
# has not touched the host.
refused() {
  local what=$1 message=$2
  shift 2
  if play "$@"; then
    show_log
    fail "the play ran $what"
  fi
  grep -q "$message" "$work/play-$run.log" || {
    show_log
    fail "no clear message ('$message') when run $what"
  }
  [ ! -e "$work/etc" ] || fail "the play changed the host before checking its variables"
}

say "a run without crier_mqtt_password fails with a clear message"
refused "without crier_mqtt_password" 'crier_mqtt_password is required'

say "a poster user named like the read-only user is refused"
write_secrets "$password"
refused "with the same name for the poster and read-only users" 'the three users differ' \
  -e "@$work/settings.yml" -e "@$work/secrets.yml" -e crier_mqtt_poster_user=watcher

say "the README's invocation: only crier_mqtt_password in secrets.yml"
readme_secrets "$password"
play -e "@$work/secrets.yml" || {
  show_log
  fail "the README's invocation failed"
}
echo "   $recap"
[ "$(counter changed)" -gt 0 ] || fail "the README's invocation changed nothing"
check_users crier
out=$(pub -u crier -P "$password" -t crier/check -m hello) || fail "crier refused: $out"
! grep -qi 'not authori' <<<"$out" || fail "crier may not publish under crier/#: $out"

say "a run adding the optional users and listeners"
write_secrets "$password"
play -e "@$work/settings.yml" -e "@$work/secrets.yml" || {
  show_log
  fail "the run adding the optional users failed"
}
echo "   $recap"
[ "$(counter changed)" -gt 0 ] || fail "adding the optional users changed nothing"
check_users "crier poster watcher"

say "second run reports changed=0"
play -e "@$work/settings.yml" -e "@$work/secrets.yml" || {
  show_log
  fail "second run failed"
}
echo "   $recap"
[ "$(counter changed)" = 0 ] || {
  grep -B2 '^changed:' "$work/play-$run.log" >&2 || true
  fail "second run is not idempotent"
}
broker_pid=$(cat "$pid_file")

say "anonymous clients are refused"
out=$(timeout 10 mosquitto_sub -h 127.0.0.1 -p "$mqtt_port" -t 'crier/#' -C 1 -W 5 2>&1) &&
  fail "anonymous subscribe was accepted: $out"
grep -qi 'not authori' <<<"$out" || fail "anonymous subscribe failed, but not as refused: $out"
out=$(pub -t crier/check -m hello) && fail "anonymous publish was accepted: $out"
grep -qi 'not authori' <<<"$out" || fail "anonymous publish failed, but not as refused: $out"
out=$(pub -u crier -P wrong-password -t crier/check -m hello) &&
  fail "a wrong password was accepted: $out"

say "crier is accepted under crier/# only; watcher may read, not write"
out=$(pub -u crier -P "$password" -t crier/check -m hello) || fail "crier refused: $out"
! grep -qi 'not authori' <<<"$out" || fail "crier may not publish under crier/#: $out"
out=$(pub -u crier -P "$password" -t elsewhere/check -m hello)
grep -qi 'not authori' <<<"$out" || fail "crier may publish outside crier/#: $out"
out=$(pub -u watcher -P "$watch_password" -t crier/check -m hello)
grep -qi 'not authori' <<<"$out" || fail "watcher may publish: $out"

say "poster may publish posts, and nothing else"
posts=crier/channels/6f9619ff-8b86-d011-b42d-00cf4fc964ff
out=$(pub -u poster -P "$poster_password" -t "$posts/post" -m '{"author":"dev","text":"hi"}') ||
  fail "poster refused: $out"
! grep -qi 'not authori' <<<"$out" || fail "poster may not post: $out"
out=$(pub -u poster -P "$poster_password" -t "$posts/messages" -m '{"id":1}')
grep -qi 'not authori' <<<"$out" || fail "poster may publish a message as if stored: $out"

say "WebSocket$($have_tls && echo ' and TLS') listeners answer, on loopback only"
listening=("$ws_port" "$mqtt_port")
if $have_tls; then listening+=("$tls_port"); fi
python3 - "${listening[@]}" <<'EOF'
import socket, sys
ws_port = int(sys.argv[1])
ports = {int(p) for p in sys.argv[1:]}
# Listening sockets of these ports must be bound to a loopback address.
loopback = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
seen = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    with open(table) as f:
        next(f)
        for line in f:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A" and int(port, 16) in ports:
                seen.add(int(port, 16))
                if address not in loopback:
                    sys.exit(f"port {int(port, 16)} listens beyond loopback ({address})")
if seen != ports:
    sys.exit(f"not listening: {sorted(ports - seen)}")
with socket.create_connection(("127.0.0.1", ws_port), timeout=5) as s:
    s.settimeout(5)
    s.sendall(b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n")
    status = s.recv(128).split(b"\r\n")[0]
if b" 101 " not in status + b" ":
    sys.exit(f"WebSocket upgrade answered {status!r}")
EOF
if $have_tls; then
  out=$(timeout 10 mosquitto_pub -h 127.0.0.1 -p "$tls_port" --cafile "$work/tls/cert.pem" \
    -u crier -P "$password" -V 5 -q 1 -t crier/check -m hello 2>&1) ||
    fail "TLS publish failed: $out"
else
  echo "   (openssl missing: TLS listener not tested)"
fi

mqtt_url="mqtt://crier:$password@127.0.0.1:$mqtt_port"
say "chat-service and broadcast-sse through the broker"
RUST_LOG=${RUST_LOG:-info} "$chat_bin" --listen "127.0.0.1:$chat_port" --mqtt-url "$mqtt_url" \
  --data-dir "$work/crier-data" >"$work/chat-service.log" 2>&1 &
chat_pid=$!
pids+=("$chat_pid")
RUST_LOG=${RUST_LOG:-info} "$sse_bin" --listen "127.0.0.1:$sse_port" --mqtt-url "$mqtt_url" \
  --history-url "http://127.0.0.1:$chat_port" >"$work/broadcast-sse.log" 2>&1 &
sse_pid=$!
pids+=("$sse_pid")

# /readyz is 200 once a service's broker connection (with the password) is up.
wait_ready() {
  for _ in $(seq 150); do
    curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$1/readyz" && return 0
    kill -0 "$3" 2>/dev/null || fail "$2 exited"
    sleep 0.1
  done
  fail "$2 not ready within 15 s (is it connected to the broker?)"
}
wait_ready "$chat_port" chat-service "$chat_pid"
wait_ready "$sse_port" broadcast-sse "$sse_pid"

# Waits until file $1 contains fixed string $2, up to $3 tenths of a second.
wait_for_text() {
  for _ in $(seq "$3"); do
    grep -qF -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

channel=$(python3 -c 'import uuid; print(uuid.uuid4())')
text="hello through mosquitto $RANDOM"

# A watch-only MQTT client sees what the browsers see.
timeout 20 stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$mqtt_port" -u watcher -P "$watch_password" \
  -t "crier/channels/$channel/messages" -C 1 -W 15 -d >"$work/watcher.out" 2>&1 &
pids+=($!)
wait_for_text "$work/watcher.out" SUBACK 100 || fail "the watcher could not subscribe"

# The stream's headers come once broadcast-sse holds the broker subscription; its
# first line is retry:.
curl -sN --max-time 20 "http://127.0.0.1:$sse_port/channels/$channel/events" \
  >"$work/sse.out" 2>&1 &
pids+=($!)
wait_for_text "$work/sse.out" "retry:" 100 || fail "the SSE stream did not open"

status=$(curl -s --max-time 10 -o "$work/post.out" -w '%{http_code}' \
  -H 'Content-Type: application/json' \
  --data "{\"author\":\"ops\",\"text\":\"$text\"}" \
  "http://127.0.0.1:$chat_port/channels/$channel/messages")
[ "$status" = 201 ] || fail "POST answered $status: $(cat "$work/post.out")"
wait_for_text "$work/sse.out" "$text" 100 || fail "the message did not reach the SSE client"
grep -q '^id: 1$' "$work/sse.out" || fail "the SSE event has no id: 1"
wait_for_text "$work/watcher.out" "$text" 100 || fail "the message did not reach the MQTT watcher"
echo "   SSE: $(grep '^data:' "$work/sse.out")"

for pid in "${pids[@]}"; do
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
done
pids=()

say "the plain examples work: mosquitto.conf, and bridge.conf sharing crier/# both ways"
# Starts example $1 on port $2, its host-specific lines pointed at this test's
# broker and files.
example() {
  mkdir -p "$work/example-$2"
  chown mosquitto "$work/example-$2"
  LISTENER="$2 127.0.0.1" PASSWORD_FILE=$work/etc/crier.passwd ACL_FILE=$here/crier.acl \
    PERSISTENCE_LOCATION=$work/example-$2/ ADDRESS=127.0.0.1:$mqtt_port \
    REMOTE_PASSWORD=$password python3 - "$here/$1" "$work/$1" <<'EOF'
import os, sys
keys = ["listener", "password_file", "acl_file", "persistence_location", "address",
        "remote_password"]
seen = set()
with open(sys.argv[1]) as src, open(sys.argv[2], "w") as dest:
    for line in src:
        key = line.split(" ", 1)[0]
        if key in keys:
            line = key + " " + os.environ[key.upper()] + "\n"
            seen.add(key)
        dest.write(line)
if not {"listener", "password_file", "acl_file"} <= seen:
    sys.exit(sys.argv[1] + ": the lines to adapt are missing")
EOF
  mosquitto -c "$work/$1" >"$work/$1.log" 2>&1 &
  pids+=($!)
  wait_for_text "$work/$1.log" running 50 || fail "$1 did not start"
}
example mosquitto.conf "$plain_port"
out=$(timeout 10 mosquitto_pub -h 127.0.0.1 -p "$plain_port" -V 5 -q 1 -t crier/check -m hi 2>&1) &&
  fail "mosquitto.conf accepts anonymous clients"
out=$(timeout 10 mosquitto_pub -h 127.0.0.1 -p "$plain_port" -V 5 -q 1 -u crier -P "$password" \
  -t crier/check -m hi 2>&1) || fail "mosquitto.conf refuses crier: $out"
! grep -qi 'not authori' <<<"$out" || fail "mosquitto.conf: crier may not publish: $out"

example bridge.conf "$bridge_port"
wait_for_text "$work/log/mosquitto.log" "as crier-bridge-site-b" 100 ||
  fail "bridge.conf did not connect to the main broker"
# Watches topic $1 on port $2 (as watcher) into file $3, once subscribed.
watch() {
  timeout 15 stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$2" -u watcher -P "$watch_password" \
    -t "$1" -C 1 -W 10 -d >"$3" 2>&1 &
  pids+=($!)
  wait_for_text "$3" SUBACK 100 || fail "could not subscribe to $1 on port $2"
}
watch crier/bridge/to-edge "$bridge_port" "$work/edge.out"
watch crier/bridge/to-main "$mqtt_port" "$work/main.out"
pub -u crier -P "$password" -t crier/bridge/to-edge -m from-main >/dev/null
timeout 10 mosquitto_pub -h 127.0.0.1 -p "$bridge_port" -V 5 -q 1 -u crier -P "$password" \
  -t crier/bridge/to-main -m from-edge >/dev/null
wait_for_text "$work/edge.out" from-main 100 || fail "main -> bridge broker: nothing arrived"
wait_for_text "$work/main.out" from-edge 100 || fail "bridge broker -> main: nothing arrived"

for pid in "${pids[@]}"; do
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
done
pids=()

say "a new password is applied by a reload; the next run is quiet again"
new_password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
write_secrets "$new_password"
play -e "@$work/settings.yml" -e "@$work/secrets.yml" || {
  show_log
  fail "password change run failed"
}
echo "   $recap"
[ "$(counter changed)" -gt 0 ] || fail "the password change changed nothing"
[ "$(cat "$pid_file")" = "$broker_pid" ] || fail "a password change restarted the broker"
out=$(pub -u crier -P "$new_password" -t crier/check -m hello) || fail "new password refused: $out"
out=$(pub -u crier -P "$password" -t crier/check -m hello) && fail "old password still accepted"
play -e "@$work/settings.yml" -e "@$work/secrets.yml" || {
  show_log
  fail "run after the password change failed"
}
[ "$(counter changed)" = 0 ] || fail "run after the password change is not idempotent: $recap"

say "the README's invocation again removes the optional users"
readme_secrets "$new_password"
play -e "@$work/secrets.yml" || {
  show_log
  fail "the README's invocation after the optional users failed"
}
echo "   $recap"
check_users crier
out=$(pub -u crier -P "$new_password" -t crier/check -m hello) || fail "crier refused: $out"
! grep -qi 'not authori' <<<"$out" || fail "crier may not publish under crier/#: $out"
out=$(pub -u watcher -P "$watch_password" -t crier/check -m hello) &&
  fail "the removed watcher is still accepted: $out"
out=$(pub -u poster -P "$poster_password" -t "$posts/post" -m '{"author":"dev","text":"hi"}') &&
  fail "the removed poster is still accepted: $out"

say "the broker is stopped"
broker_pid=$(cat "$pid_file")
stop_broker
[ ! -d "/proc/$broker_pid" ] || fail "the broker (pid $broker_pid) is still running"
if (exec 3<>"/dev/tcp/127.0.0.1/$mqtt_port") 2>/dev/null; then
  fail "something still listens on $mqtt_port"
fi

say "passed in $((SECONDS - start_time)) s"
