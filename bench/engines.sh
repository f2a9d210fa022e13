#!/usr/bin/env bash
# The store's write pattern on sled (as Crier runs it, and with a true
# fdatasync after each flush) and on fjall, an LSM engine: appends over 64
# channels, one sync per group of 17 messages (the group size the writer sees
# under the 64-connection ingest load), one thread. Alternating runs; prints
# each run and the medians of CPU µs per message.
#
#   bench/engines.sh [runs] [messages] [group]
#
#   BENCH_ENGINES  of: sled sled-fdatasync fjall, each also with -nosync
#                  (default: sled sled-fdatasync fjall sled-nosync fjall-nosync)
#
# Builds bench/engines/ on its own: it is not part of the workspace, so the
# test command never builds fjall.
set -euo pipefail

runs=${1:-3}
messages=${2:-1000000}
group=${3:-17}
engines=${BENCH_ENGINES:-sled sled-fdatasync fjall sled-nosync fjall-nosync}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
cd "$root/bench/engines"
cargo build --release --quiet
work=$(mktemp -d "$root/bench/engines/run.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

declare -A cpu=()
for run in $(seq 1 "$runs"); do
  for engine in $engines; do
    line=$(../target/release/crier-bench-engines "$engine" "$messages" "$group")
    echo "run $run: $line"
    cpu[$engine]+="$(sed -E 's/.*cpu ([0-9.]+) us.*/\1/' <<<"$line") "
  done
done
echo "median CPU per message of $runs runs, $messages messages, a sync every $group:"
for engine in $engines; do
  # shellcheck disable=SC2086 # one figure per word
  printf '  %-16s %s us\n' "$engine" "$(printf '%s\n' ${cpu[$engine]} | median)"
done
