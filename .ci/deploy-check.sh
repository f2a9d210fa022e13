#!/usr/bin/env bash
# Checks the deployment examples in deploy/: the systemd units pass
# `systemd-analyze verify`, the nginx example passes `nginx -t`, the NATS
# configuration passes `nats-server -t`, and the Grafana dashboard is JSON
# naming every metric the services export.
# Installs systemd-analyze and nginx with apt-get when they are missing.
# Needs no running systemd or nginx and binds no port; takes a few seconds.
#
#   .ci/deploy-check.sh
#
# CRIER_NATS_SERVER   the nats-server binary (else nats-server on PATH); the
#                     NATS configuration is skipped without one, unless
#                     CRIER_REQUIRE_EXTERNAL=1
set -euo pipefail
cd "$(dirname "$0")/.."

units=(crier chat-service broadcast-sse nats-server)

missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have systemd-analyze || missing+=(systemd)
have nginx || missing+=(nginx)
have openssl || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
PATH="$PATH:/usr/sbin:/sbin"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0

# --- systemd units -----------------------------------------------------------
# `verify` refuses an ExecStart= binary that does not exist, so each unit is
# checked as a copy whose ExecStart= runs a stub (with the same arguments);
# everything else is as shipped. It exits 0 on unknown keys and bad values,
# printing them only, so any line about these units is a failure.
mkdir -p "$work/bin" "$work/units"
printf '#!/bin/sh\nexit 0\n' >"$work/bin/stub"
chmod 0755 "$work/bin/stub"
for unit in "${units[@]}"; do
  src="deploy/systemd/$unit.service"
  grep -Eq "^ExecStart=/usr/local/bin/$unit( |\$)" "$src" || {
    echo "FAIL $src: expected a line ExecStart=/usr/local/bin/$unit [ARGS]"
    failed=1
  }
  sed -E "s#^ExecStart=/usr/local/bin/$unit( |\$)#ExecStart=$work/bin/stub\1#" "$src" \
    >"$work/units/$unit.service"
done
status=0
timeout 30 systemd-analyze verify --man=no "$work"/units/*.service \
  >"$work/verify.out" 2>&1 || status=$?
pattern="$work/units|$(IFS='|'; echo "${units[*]/%/\\.service}")"
if [ "$status" -ne 0 ] || grep -Eq "$pattern" "$work/verify.out"; then
  echo "FAIL systemd-analyze verify (exit $status):"
  sed "s|$work/units/|deploy/systemd/|g" "$work/verify.out"
  failed=1
else
  echo "ok   systemd-analyze verify: ${units[*]/%/.service}"
fi

# --- nginx example -----------------------------------------------------------
# deploy/nginx/crier.conf is meant for /etc/nginx/conf.d/ (inside http {}):
# wrap it in a minimal nginx.conf whose every path is under $work, with a
# throw-away self-signed certificate in place of /etc/ssl/crier/.
ngx="$work/nginx"
mkdir -p "$ngx/logs" "$ngx/tmp" "$ngx/ssl"
timeout 30 openssl req -x509 -newkey rsa:2048 -nodes -days 1 \
  -subj "/CN=chat.example.org" \
  -keyout "$ngx/ssl/privkey.pem" -out "$ngx/ssl/fullchain.pem" >/dev/null 2>&1
sed "s|/etc/ssl/crier/|$ngx/ssl/|g" deploy/nginx/crier.conf >"$ngx/crier.conf"
cat >"$ngx/nginx.conf" <<EOF
pid $ngx/nginx.pid;
error_log $ngx/logs/error.log;
events {}
http {
    access_log off;
    client_body_temp_path $ngx/tmp/body;
    proxy_temp_path $ngx/tmp/proxy;
    fastcgi_temp_path $ngx/tmp/fastcgi;
    uwsgi_temp_path $ngx/tmp/uwsgi;
    scgi_temp_path $ngx/tmp/scgi;
    include $ngx/crier.conf;
}
EOF
status=0
timeout 30 nginx -t -p "$ngx/" -e "$ngx/logs/error.log" -c "$ngx/nginx.conf" \
  >"$work/nginx.out" 2>&1 || status=$?
if [ "$status" -ne 0 ] || grep -Eq '\[(emerg|alert|crit|error|warn)\]' "$work/nginx.out"; then
  echo "FAIL nginx -t (exit $status, $(nginx -v 2>&1)):"
  sed "s|$ngx/crier.conf|deploy/nginx/crier.conf|g" "$work/nginx.out"
  failed=1
else
  echo "ok   nginx -t: deploy/nginx/crier.conf ($(nginx -v 2>&1))"
fi

# --- the cluster front: nginx and HAProxy ------------------------------------
# deploy/nginx/cluster.conf, wrapped the same way (it has no TLS to replace);
# deploy/local-cluster.sh runs it for real in the tests.
sed "s|include $ngx/crier.conf;|include $PWD/deploy/nginx/cluster.conf;|" "$ngx/nginx.conf" >"$ngx/cluster.nginx.conf"
status=0
timeout 30 nginx -t -p "$ngx/" -e "$ngx/logs/error.log" -c "$ngx/cluster.nginx.conf" \
  >"$work/cluster.out" 2>&1 || status=$?
if [ "$status" -ne 0 ] || grep -Eq '\[(emerg|alert|crit|error|warn)\]' "$work/cluster.out"; then
  echo "FAIL nginx -t: deploy/nginx/cluster.conf (exit $status):"
  cat "$work/cluster.out"
  failed=1
else
  echo "ok   nginx -t: deploy/nginx/cluster.conf"
fi
have haproxy || { echo "installing: haproxy"; apt-get install -y -qq --no-install-recommends haproxy; }
if out=$(timeout 30 haproxy -c -f deploy/haproxy/crier.cfg 2>&1) && ! grep -qi '\[WARNING\]' <<<"$out"; then
  echo "ok   haproxy -c: deploy/haproxy/crier.cfg ($(haproxy -v 2>&1 | head -1 | cut -d' ' -f1-3))"
else
  echo "FAIL haproxy -c: deploy/haproxy/crier.cfg:"
  echo "$out"
  failed=1
fi

# --- NATS ---------------------------------------------------------------------
# deploy/nats/nats-server.conf with `nats-server -t` (parses and checks it;
# starts nothing). Its store_dir and routes need not exist here.
nats_conf=deploy/nats/nats-server.conf
nats_server=${CRIER_NATS_SERVER:-$(command -v nats-server || true)}
if [ -n "$nats_server" ] && [ -x "$nats_server" ]; then
  if out=$(timeout 30 "$nats_server" -t -c "$nats_conf" 2>&1); then
    echo "ok   nats-server -t: $nats_conf ($("$nats_server" --version 2>&1))"
  else
    echo "FAIL nats-server -t: $nats_conf:"
    echo "$out"
    failed=1
  fi
elif [ "${CRIER_REQUIRE_EXTERNAL:-}" = 1 ]; then
  echo "FAIL nats-server -t: no nats-server (set CRIER_NATS_SERVER or put it on PATH)"
  failed=1
else
  echo "skip nats-server -t: $nats_conf (no nats-server; set CRIER_NATS_SERVER)"
fi

# --- Grafana dashboard -------------------------------------------------------
# Valid JSON, and every metric name in server/src/metrics.rs is on a panel.
dashboard=deploy/grafana/crier.json
if ! python3 -m json.tool "$dashboard" >/dev/null; then
  echo "FAIL $dashboard is not valid JSON"
  failed=1
else
  absent=()
  while read -r name; do
    grep -q "$name" "$dashboard" || absent+=("$name")
  done < <(grep -o '"crier_[a-z_]*"' server/src/metrics.rs | tr -d '"' | sort -u)
  if [ ${#absent[@]} -gt 0 ]; then
    echo "FAIL $dashboard has no panel for: ${absent[*]}"
    failed=1
  else
    echo "ok   $dashboard: JSON, every metric of server/src/metrics.rs"
  fi
fi

exit "$failed"
