#!/usr/bin/env bash
# Builds the container image's runtime stage (Containerfile.prebuilt) and
# starts what it contains, without a container registry or runtime:
#
#   1. a Debian 12 minbase root filesystem made by mmdebstrap, trimmed like
#      debian:bookworm-slim, imported into podman as the BASE;
#   2. `podman build --build-arg BASE=…` of Containerfile.prebuilt with the
#      binaries cargo built (the runtime stage is the Containerfile's, which
#      this script also compares line by line);
#   3. `podman create` + `podman export`: the image's root filesystem;
#   4. in it, under chroot, as the image's USER, with the image's ENV, in a
#      network namespace of its own that has only loopback: the image's
#      ENTRYPOINT and CMD, which must start crier; its HEALTHCHECK must pass;
#      a message is posted, read on a stream and from history, and must be
#      stored in the image's data volume; SIGTERM must end crier with exit 0.
#
# It fails when the entrypoint, the user, the data volume or the binaries'
# libraries are wrong, and when the image holds a compiler or apt's caches.
# It also checks that deploy/compose.yaml parses and names only images,
# commands and CRIER_* variables that exist. Prints the image's size.
#
#   .ci/container-check.sh [release|debug|DIR]
#
# release (the default) and debug run `cargo build` of that profile (nothing
# to do when it is fresh) and take the binaries from target/; DIR takes them
# from DIR. The binaries go in without debug info (release builds have none;
# debug builds would be ten times the size), which changes nothing about how
# they load. CRIER_CONTAINERFILE=FILE builds FILE instead of
# Containerfile.prebuilt (to see the check fail on a broken one).
#
# Runs as root: installs mmdebstrap and podman when they are missing, chroots,
# mounts /proc and a small /dev in the root filesystem, makes a network
# namespace. Takes about a minute after the compile, half of it making the
# base. `podman run` is not used: the machines CI runs on cannot run
# containers (crun cannot set rlimits there), and the build runs its RUN
# steps with --isolation=chroot for the same reason.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
say() { printf '%s  [%3ds] %s\n' "${2:-ok  }" $((SECONDS - started)) "$1"; }
fail() { say "$1" FAIL; exit 1; }

[ "$(id -u)" -eq 0 ] || { echo "container-check: needs root (chroot, mount, ip netns)"; exit 1; }

mode=${1:-release}
containerfile=${CRIER_CONTAINERFILE:-Containerfile.prebuilt}
binaries=(crier chat-service broadcast-sse)
data_dir=/var/lib/crier

missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have mmdebstrap || missing+=(mmdebstrap)
have podman || missing+=(podman)
have ip || missing+=(iproute2)
have curl || missing+=(curl)
have objcopy || missing+=(binutils)
python3 -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
PATH="$PATH:/usr/sbin:/sbin"
python3 -c 'import yaml' 2>/dev/null || fail "python3 cannot import yaml"

# --- the binaries ----------------------------------------------------------------
case "$mode" in
  release | debug)
    profile_flag=()
    [ "$mode" = release ] && profile_flag=(--release)
    cargo build --quiet "${profile_flag[@]}" --bins -p crier -p chat-service -p broadcast-sse
    bin_dir="${CARGO_TARGET_DIR:-target}/$mode"
    ;;
  *) bin_dir=$mode ;;
esac
for b in "${binaries[@]}"; do
  [ -x "$bin_dir/$b" ] || fail "no executable $bin_dir/$b"
done
say "binaries from $bin_dir"

# --- everything made here goes away at the end -----------------------------------
work=$(mktemp -d /tmp/crier-container-check.XXXXXX)
rootfs="$work/rootfs"
image="localhost/crier-check:$$"
container="crier-check-$$"
netns="crier-check-$$"
pids=()
cleanup() {
  local status=$?
  set +e
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  for m in "$rootfs/proc" "$rootfs/dev"; do
    mountpoint -q "$m" 2>/dev/null && { umount "$m" || umount -l "$m"; }
  done
  ip netns delete "$netns" 2>/dev/null
  podman rm --force --ignore "$container" >/dev/null 2>&1
  podman rmi --force "$image" >/dev/null 2>&1
  # --one-file-system: never into anything still mounted in the root filesystem.
  rm -rf --one-file-system "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the two Containerfiles share their runtime stage ------------------------------
python3 - Containerfile Containerfile.prebuilt <<'EOF' || fail "Containerfile and Containerfile.prebuilt differ in their runtime stage"
import sys
def runtime(path):
    lines = open(path).read().splitlines()
    base_arg = [l for l in lines if l.startswith("ARG BASE=")]
    start = next(i for i, l in enumerate(lines) if l.startswith("FROM ${BASE}"))
    return base_arg, [l for l in lines[start:] if not l.startswith("COPY ")]
a, b = (runtime(p) for p in sys.argv[1:3])
if a != b:
    import difflib
    print("\n".join(difflib.unified_diff(a[0] + a[1], b[0] + b[1], *sys.argv[1:3], lineterm="")))
    sys.exit(1)
EOF
grep -q -- '--release --locked --bins -p crier -p chat-service -p broadcast-sse' Containerfile ||
  fail "Containerfile's build stage does not build the three binaries"
say "Containerfile and Containerfile.prebuilt: same runtime stage"

# --- deploy/compose.yaml -------------------------------------------------------------
for b in "${binaries[@]}"; do
  "$bin_dir/$b" --help >"$work/help-$b.txt" || fail "$b --help failed"
done
python3 - deploy/compose.yaml "$work" <<'EOF' || fail "deploy/compose.yaml"
import os, re, sys, urllib.parse, yaml
path, work = sys.argv[1], sys.argv[2]
# Images from elsewhere that the file may name (no registry is asked here).
KNOWN_IMAGES = {"eclipse-mosquitto:2"}
BINARIES = ("crier", "chat-service", "broadcast-sse")
helps = {b: open(os.path.join(work, f"help-{b}.txt")).read() for b in BINARIES}
errors = []
doc = yaml.safe_load(open(path))
services = doc.get("services") or {}
if not {"mosquitto", "chat-service", "broadcast-sse"} <= set(services):
    errors.append(f"services are {sorted(services)}: want mosquitto, chat-service, broadcast-sse")
volumes = set(doc.get("volumes") or {})
for name, svc in services.items():
    image = svc.get("image")
    build = svc.get("build")
    if isinstance(build, str):
        build = {"context": build}
    if build is not None:
        context = os.path.normpath(os.path.join(os.path.dirname(path), build.get("context", ".")))
        dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
        if not os.path.isfile(dockerfile):
            errors.append(f"{name}: build file {dockerfile} does not exist")
            continue
        command = svc.get("command") or ["crier"]
        if isinstance(command, str):
            command = command.split()
        binary = command[0]
        if binary.startswith("-"):
            binary = "crier"
        if binary not in BINARIES:
            errors.append(f"{name}: command {command[0]!r} is none of {', '.join(BINARIES)}")
            continue
        help_text = helps[binary]
        for arg in command[1:]:
            flag = arg.split("=", 1)[0]
            if flag.startswith("--") and not re.search(rf"(^|\s){re.escape(flag)}[\s,]", help_text):
                errors.append(f"{name}: {binary} has no flag {flag}")
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        for key, value in env.items():
            if key.startswith("CRIER_") and f"[env: {key}" not in help_text:
                errors.append(f"{name}: {binary} does not read {key}")
            elif not key.startswith("CRIER_") and key != "RUST_LOG":
                errors.append(f"{name}: {key} is not a setting of {binary}")
            if key in ("CRIER_MQTT_URL", "CRIER_HISTORY_URL"):
                host = urllib.parse.urlsplit(str(value)).hostname
                if host not in services:
                    errors.append(f"{name}: {key} names {host!r}, not a service of this file")
    elif image not in KNOWN_IMAGES:
        errors.append(f"{name}: image {image!r} is neither built here nor one of {sorted(KNOWN_IMAGES)}")
    for volume in svc.get("volumes") or []:
        source = str(volume).split(":", 1)[0]
        if not source.startswith((".", "/")) and source not in volumes:
            errors.append(f"{name}: volume {source!r} is not declared")
    for dep in svc.get("depends_on") or []:
        if dep not in services:
            errors.append(f"{name}: depends on {dep!r}, not a service of this file")
for e in errors:
    print(f"  {e}")
sys.exit(1 if errors else 0)
EOF
say "deploy/compose.yaml: parses; images, commands and CRIER_* variables exist"

# --- the base: Debian 12 minbase, trimmed like debian:bookworm-slim ------------------
# merged-usr: /bin and friends made as links, as in Debian 12's images,
# without the usrmerge package (and the perl it would pull in). The base is
# kept in podman's storage for the day, so a second run on one machine is quicker.
base_args=(--variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/groff/*'
  --dpkgopt='path-exclude=/usr/share/lintian/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  bookworm)
base_key=$(printf '%s\n' "${base_args[@]}" | sha256sum | cut -c1-8)
base="localhost/crier-check-base:bookworm-$(date -u +%Y%m%d)-$base_key"
if ! podman image exists "$base"; then
  timeout 300 mmdebstrap --quiet "${base_args[@]}" "$work/base.tar" >"$work/mmdebstrap.log" 2>&1 ||
    { tail -30 "$work/mmdebstrap.log"; fail "mmdebstrap of the base"; }
  podman import --quiet "$work/base.tar" "$base" >/dev/null
  rm -f "$work/base.tar"
  for old in $(podman images --format '{{.Repository}}:{{.Tag}}' localhost/crier-check-base); do
    [ "$old" = "$base" ] || podman rmi --force "$old" >/dev/null 2>&1 || true
  done
  say "base image $base (mmdebstrap, podman import)"
else
  say "base image $base (made earlier today)"
fi

# --- the image -----------------------------------------------------------------------
context="$work/context"
mkdir -p "$context"
for b in "${binaries[@]}"; do
  objcopy --strip-debug "$bin_dir/$b" "$context/$b"
done
timeout 300 podman build --quiet --isolation=chroot --format docker --pull=never \
  --build-arg "BASE=$base" -f "$containerfile" -t "$image" "$context" >"$work/build.log" 2>&1 ||
  { cat "$work/build.log"; fail "podman build of $containerfile"; }
podman image inspect "$image" >"$work/image.json"
podman image inspect "$base" >"$work/base.json"
say "podman build -f $containerfile"

# The image's settings, as files the shell reads (lists NUL-separated).
python3 - "$work" <<'EOF'
import json, os, sys
work = sys.argv[1]
image = json.load(open(os.path.join(work, "image.json")))[0]
base = json.load(open(os.path.join(work, "base.json")))[0]
config = image.get("Config") or {}
def out(name, items):
    with open(os.path.join(work, name), "w") as f:
        f.write("".join(f"{i}\0" for i in items))
out("entrypoint", config.get("Entrypoint") or [])
out("cmd", config.get("Cmd") or [])
env = config.get("Env") or []
if not any(e.startswith("PATH=") for e in env):
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + env
out("env", env)
health = image.get("Healthcheck") or config.get("Healthcheck") or {}
out("healthcheck", health.get("Test") or [])
out("volumes", sorted(config.get("Volumes") or {}))
out("ports", sorted(config.get("ExposedPorts") or {}))
out("scalars", [config.get("User") or "", config.get("WorkingDir") or "",
                config.get("StopSignal") or "", image["Size"], base["Size"]])
EOF
mapfile -d '' -t entrypoint <"$work/entrypoint"
mapfile -d '' -t cmd <"$work/cmd"
mapfile -d '' -t image_env <"$work/env"
mapfile -d '' -t healthcheck <"$work/healthcheck"
mapfile -d '' -t volumes <"$work/volumes"
mapfile -d '' -t ports <"$work/ports"
mapfile -d '' -t scalars <"$work/scalars"
user=${scalars[0]} workdir=${scalars[1]} stopsignal=${scalars[2]}
image_size=${scalars[3]} base_size=${scalars[4]}
env_value() { # the image's value of $1
  local e
  for e in "${image_env[@]}"; do [ "${e%%=*}" = "$1" ] && { printf '%s' "${e#*=}"; return 0; }; done
  return 1
}

# --- its settings ----------------------------------------------------------------------
podman create --name "$container" "$image" >/dev/null
mkdir "$rootfs"
podman export "$container" | tar -x -C "$rootfs" --numeric-owner
say "podman create + podman export: the image's root filesystem"

[ -n "$user" ] || fail "the image has no USER: it would run as root"
uid=${user%%:*}
gid=
[ "$user" != "$uid" ] && gid=${user#*:}
if ! [[ $uid =~ ^[0-9]+$ ]]; then
  line=$(grep -m1 "^$uid:" "$rootfs/etc/passwd") || fail "USER $user: no such user in the image"
  uid=$(cut -d: -f3 <<<"$line")
  [ -n "$gid" ] || gid=$(cut -d: -f4 <<<"$line")
fi
if [ -z "$gid" ]; then
  gid=$(awk -F: -v u="$uid" '$3 == u { print $4; exit }' "$rootfs/etc/passwd")
  [ -n "$gid" ] || gid=0
fi
if ! [[ $gid =~ ^[0-9]+$ ]]; then
  gid=$(awk -F: -v g="$gid" '$1 == g { print $3; exit }' "$rootfs/etc/group")
  [ -n "$gid" ] || fail "USER $user: no such group in the image"
fi
[ "$uid" -ne 0 ] || fail "USER $user is root"
[ "$gid" -ne 0 ] || fail "USER $user runs with the root group"
say "USER $user: runs as $uid:$gid"

printf '%s\n' "${volumes[@]}" | grep -qx "$data_dir" || fail "VOLUME ${volumes[*]:-(none)}: $data_dir is not a volume"
[ "$(env_value CRIER_DATA_DIR || true)" = "$data_dir" ] || fail "ENV CRIER_DATA_DIR is not $data_dir"
[ -d "$rootfs$data_dir" ] || fail "$data_dir is not in the image"
[ "$(stat -c %u "$rootfs$data_dir")" = "$uid" ] || fail "$data_dir is not owned by the image's user"
say "VOLUME $data_dir, CRIER_DATA_DIR=$data_dir, owned by $uid"

listen=$(env_value CRIER_LISTEN) || fail "the image sets no CRIER_LISTEN (crier would listen on 127.0.0.1 only)"
port=${listen##*:}
case "${listen%:*}" in 0.0.0.0 | "[::]") ;; *) fail "CRIER_LISTEN=$listen is not every interface" ;; esac
for p in "$port/tcp" 1883/tcp; do
  printf '%s\n' "${ports[@]}" | grep -qx "$p" || fail "EXPOSE lacks $p (has: ${ports[*]:-none})"
done
[ "$stopsignal" = SIGTERM ] || fail "STOPSIGNAL is '${stopsignal:-unset}', not SIGTERM"
if [ ${#healthcheck[@]} -eq 0 ] || [ "${healthcheck[0]}" = NONE ]; then fail "no HEALTHCHECK"; fi
say "CRIER_LISTEN=$listen, EXPOSE ${ports[*]}, STOPSIGNAL $stopsignal, HEALTHCHECK"

for tool in cc gcc c++ g++ rustc cargo clang; do
  for dir in usr/local/bin usr/bin bin usr/local/cargo/bin; do
    [ ! -e "$rootfs/$dir/$tool" ] || fail "the image holds a compiler: /$dir/$tool"
  done
done
leftovers=$(find "$rootfs/var/lib/apt/lists" "$rootfs/var/cache/apt" -type f ! -name lock 2>/dev/null | head -5)
[ -z "$leftovers" ] || fail "the image holds apt's caches: ${leftovers//$rootfs/}"
for b in "${binaries[@]}"; do
  [ -x "$rootfs/usr/local/bin/$b" ] || fail "/usr/local/bin/$b is not in the image"
done
say "no compiler, no apt lists or caches; the three binaries in /usr/local/bin"

# --- run it: chroot as the image's user, the image's environment, loopback only ---------
mount -t proc proc "$rootfs/proc"
mount -t tmpfs -o mode=0755,size=1m tmpfs "$rootfs/dev"
for node in null:3 zero:5 random:8 urandom:9; do
  mknod -m 0666 "$rootfs/dev/${node%%:*}" c 1 "${node#*:}"
done
ip netns add "$netns"
ip -n "$netns" link set lo up
in_ns() { ip netns exec "$netns" "$@"; }
# The prefix that runs a command in the image as `podman run` would: the
# image's environment, its user, its root filesystem, a network of its own.
chdir=()
[ -z "$workdir" ] || [ "$workdir" = / ] || chdir=(/usr/bin/env -C "$workdir")
in_image=(env -i "${image_env[@]}" "$(command -v ip)" netns exec "$netns"
  "$(command -v chroot)" --userspec="$uid:$gid" --groups="$gid" "$rootfs" "${chdir[@]}")

if [ -x "$rootfs/usr/bin/ldd" ]; then
  for b in "${binaries[@]}"; do
    libs=$(timeout 10 "${in_image[@]}" ldd "/usr/local/bin/$b" 2>&1) || fail "ldd /usr/local/bin/$b: $libs"
    ! grep -q 'not found' <<<"$libs" || fail "/usr/local/bin/$b needs libraries the image lacks: $(grep 'not found' <<<"$libs")"
  done
fi
[ ${#entrypoint[@]} -gt 0 ] || [ ${#cmd[@]} -gt 0 ] || fail "the image has neither ENTRYPOINT nor CMD"
# `docker run IMAGE ARGS`: the entrypoint with ARGS instead of CMD.
for run in "crier|--version" "chat-service|chat-service --version" "broadcast-sse|broadcast-sse --version"; do
  want=${run%%|*}
  read -r -a args <<<"${run#*|}"
  got=$(timeout 10 "${in_image[@]}" "${entrypoint[@]}" "${args[@]}" 2>&1) ||
    fail "run IMAGE ${args[*]}: $got"
  [[ $got == "$want "* ]] || fail "run IMAGE ${args[*]}: printed '$got', not $want's version"
done
say "run IMAGE --version / chat-service --version / broadcast-sse --version: each binary starts"

"${in_image[@]}" "${entrypoint[@]}" "${cmd[@]}" >"$work/crier.log" 2>&1 &
crier_pid=$!
pids+=("$crier_pid")
base_url="http://127.0.0.1:$port"
up=
for _ in $(seq 1 150); do
  kill -0 "$crier_pid" 2>/dev/null || { cat "$work/crier.log"; fail "the image's entrypoint exited at start"; }
  if in_ns curl -fsS --max-time 1 -o /dev/null "$base_url/healthz" 2>/dev/null; then up=1; break; fi
  sleep 0.1
done
[ -n "$up" ] || { cat "$work/crier.log"; fail "no answer on $base_url/healthz within 15 s"; }
[ "$(stat -L -c %d:%i "/proc/$crier_pid/exe")" = "$(stat -c %d:%i "$rootfs/usr/local/bin/crier")" ] ||
  fail "the entrypoint runs $(readlink "/proc/$crier_pid/exe"), not /usr/local/bin/crier"
proc_uid=$(awk '/^Uid:/ { print $2 }' "/proc/$crier_pid/status")
[ "$proc_uid" = "$uid" ] || fail "crier runs as uid $proc_uid, not $uid"
say "ENTRYPOINT+CMD (${entrypoint[*]} ${cmd[*]}) runs /usr/local/bin/crier as $uid; /healthz answers"

if [ "${healthcheck[0]}" = CMD-SHELL ]; then
  health=(/bin/sh -c "${healthcheck[1]}")
else
  health=("${healthcheck[@]:1}")
fi
timeout 10 "${in_image[@]}" "${health[@]}" || fail "the HEALTHCHECK fails while crier is up"
say "HEALTHCHECK passes"

channel=$(cat /proc/sys/kernel/random/uuid)
text="from the container check $$"
in_ns curl -sS -N --max-time 20 "$base_url/channels/$channel/events?last_event_id=0" \
  >"$work/stream.txt" 2>"$work/stream.err" &
stream_pid=$!
pids+=("$stream_pid")
for _ in $(seq 1 100); do
  grep -q '^retry:' "$work/stream.txt" 2>/dev/null && break
  sleep 0.1
done
grep -q '^retry:' "$work/stream.txt" || fail "the stream did not open within 10 s: $(cat "$work/stream.err")"
code=$(in_ns curl -sS --max-time 10 -o "$work/post.json" -w '%{http_code}' \
  -H 'content-type: application/json' -d "{\"author\":\"ci\",\"text\":\"$text\"}" \
  "$base_url/channels/$channel/messages")
[ "$code" = 201 ] || fail "POST answered $code: $(cat "$work/post.json")"
for _ in $(seq 1 100); do
  grep -q "$text" "$work/stream.txt" && break
  sleep 0.1
done
grep -q "^data: .*\"id\":1,.*$text" "$work/stream.txt" || fail "the message did not come on the stream within 10 s"
history=$(in_ns curl -fsS --max-time 10 "$base_url/channels/$channel/messages")
grep -q "$text" <<<"$history" || fail "the message is not in history: $history"
stored=$(find "$rootfs$data_dir" -mindepth 1 -user "$uid" | head -1)
[ -n "$stored" ] || fail "nothing was stored in $data_dir"
say "POST 201, the message on the stream and in history, stored in $data_dir"

kill -TERM "$crier_pid"
for _ in $(seq 1 150); do
  kill -0 "$crier_pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$crier_pid" 2>/dev/null && fail "crier still runs 15 s after SIGTERM"
status=0
wait "$crier_pid" || status=$?
[ "$status" -eq 0 ] || { tail -20 "$work/crier.log"; fail "crier exited with $status after SIGTERM"; }
if timeout 10 "${in_image[@]}" "${health[@]}" 2>/dev/null; then
  fail "the HEALTHCHECK passes with crier stopped"
fi
say "SIGTERM: crier exits 0; the HEALTHCHECK then fails"

mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1000000 }'; }
say "image size $(mb "$image_size"): base $(mb "$base_size") + Crier's layers $(mb $((image_size - base_size))) (binaries from $bin_dir)" size
say "container check passed" pass
