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
