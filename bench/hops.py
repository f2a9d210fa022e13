#!/usr/bin/env python3
"""Where a message's time goes, hop by hop, from the servers' histograms.

    BENCH_METRICS=1 BENCH_ONLY=channels bench/run.sh 3
    bench/hops.py target/bench [SCENARIO]

bench/run.sh with BENCH_METRICS=1 saves each server's /metrics after every run
(SCENARIO-SYSTEM-ROUND.SERVICE.prom). This prints, per scenario and system, each
hop's mean, p50 and p99: the mean from the histogram's sum and count, the
quantiles interpolated inside its buckets (so no finer than the buckets), each
the median over the rounds. A histogram counts one sample per store write
(queue, sync) or one in 64 messages (the others), over the whole run.
"""

import collections
import glob
import os
import re
import statistics
import sys

# (histogram, what it times), in the order a message meets them.
HOPS = [
    ("crier_post_duration_seconds", "POST answered"),
    ("crier_store_queue_seconds", "queued for the store"),
    ("crier_store_commit_duration_seconds", "store write and sync"),
    ("crier_publish_seconds", "to the broker's acknowledgement"),
    ("crier_bus_lag_seconds", "from store to the node"),
    ("crier_fanout_seconds", "on the node, to the socket write"),
    ("crier_delivery_lag_seconds", "from store to the socket write"),
]
SAMPLE = re.compile(r'^(\w+?)(_bucket|_sum|_count)(\{[^}]*\})? ([0-9.eE+-]+|\+Inf|NaN)$')
LE = re.compile(r'le="([^"]+)"')


def parse(path):
    """{histogram: (buckets {le: count}, sum, count)}, label sets summed."""
    buckets = collections.defaultdict(lambda: collections.defaultdict(float))
    sums = collections.defaultdict(float)
    counts = collections.defaultdict(float)
    with open(path) as f:
        for line in f:
            match = SAMPLE.match(line.strip())
            if not match:
                continue
            name, part, labels, value = match.groups()
            value = float(value)
            if part == "_bucket":
                le = LE.search(labels or "")
                if le:
                    buckets[name][float(le.group(1))] += value
            elif part == "_sum":
                sums[name] += value
            else:
                counts[name] += value
    return {name: (buckets[name], sums[name], counts[name]) for name in counts}


def quantile(buckets, count, q):
    """The q-quantile, interpolated linearly inside its bucket."""
    if count == 0:
        return None
    rank = q * count
    previous_le, previous_count = 0.0, 0.0
    for le in sorted(buckets):
        cumulative = buckets[le]
        if cumulative >= rank:
            if le == float("inf"):
                return previous_le
            inside = cumulative - previous_count
            fraction = (rank - previous_count) / inside if inside else 1.0
            return previous_le + (le - previous_le) * fraction
        previous_le, previous_count = le, cumulative
    return previous_le


def stats(histogram):
    buckets, total, count = histogram
    if count == 0:
        return None
    return (total / count, quantile(buckets, count, 0.5), quantile(buckets, count, 0.99), count)


def runs(directory):
    """{(scenario, system): [ {histogram: stats} per round ]}."""
    by_run = collections.defaultdict(dict)
    for path in glob.glob(os.path.join(directory, "*.prom")):
        run = os.path.basename(path).rsplit(".", 2)[0]
        for name, histogram in parse(path).items():
            found = stats(histogram)
            if found:
                by_run[run][name] = found
    grouped = collections.defaultdict(list)
    for run, histograms in sorted(by_run.items()):
        scenario, system, _round = run.rsplit("-", 2)
        grouped[(scenario, system)].append(histograms)
    return grouped


def shown(seconds):
    if seconds is None:
        return "–"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e3:.2f} ms"


def median_of(rounds, name, index):
    values = [r[name][index] for r in rounds if name in r and r[name][index] is not None]
    return statistics.median(values) if values else None


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "target/bench"
    only = sys.argv[2] if len(sys.argv) > 2 else None
    grouped = runs(directory)
    if not grouped:
        sys.exit(f"no .prom files in {directory}: run bench/run.sh with BENCH_METRICS=1")
    for scenario in sorted({s for s, _ in grouped}):
        if only and scenario != only:
            continue
        systems = [system for (s, system) in sorted(grouped) if s == scenario]
        print(f"\n### {scenario}\n")
        print("| hop | " + " | ".join(f"{s} mean / p50 / p99" for s in systems) + " |")
        print("| --- |" + " --- |" * len(systems))
        for name, label in HOPS:
            cells = []
            for system in systems:
                rounds = grouped[(scenario, system)]
                mean, p50, p99 = (median_of(rounds, name, i) for i in range(3))
                cells.append("–" if mean is None else f"{shown(mean)} / {shown(p50)} / {shown(p99)}")
            if any(cell != "–" for cell in cells):
                print(f"| {label} (`{name}`) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
