#!/usr/bin/env python3
"""Turns the results of bench/run.sh into BENCHMARKS.md and docs/bench-sweep.svg.

    bench/report.py RESULTS_DIR OUTPUT_MD

The picture goes to docs/bench-sweep.svg beside OUTPUT_MD, where the page links it.
"""
import glob
import json
import os
import re
import statistics
import sys

SYSTEMS = ("crier", "split", "nchan")
NAMES = {"crier": "Crier", "split": "Split", "nchan": "Nchan"}


def load(results):
    runs = {}
    for path in sorted(glob.glob(os.path.join(results, "*.json"))):
        name = os.path.basename(path)[:-5]
        scenario, system, _round = name.rsplit("-", 2)
        try:
            with open(path) as f:
                data = json.load(f)
        except ValueError:
            data = None
        runs.setdefault((scenario, system), []).append(data)
    return runs


def values(runs, scenario, system, pick):
    out = []
    for r in runs.get((scenario, system), []):
        if r is None:
            continue
        try:
            v = pick(r)
        except (KeyError, TypeError):
            continue
        if v is not None:
            out.append(v)
    return out


def summary(vals, fmt, ran=True):
    if not vals:
        return "failed" if ran else "–"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(vals))}–{fmt(max(vals))})"


def ratio(runs, scenario, pick):
    c = values(runs, scenario, "crier", pick)
    n = values(runs, scenario, "nchan", pick)
    if not c or not n or statistics.median(n) == 0:
        return "–"
    return f"{statistics.median(c) / statistics.median(n):.2f}"


def num(v):
    return f"{v:,.0f}"


def ms(v):
    return f"{v / 1000:,.1f} ms"


def kb(v):
    return f"{v / 1000:,.1f} KB"


def secs(v):
    return f"{v:,.2f} s"


def table(runs, scenario, rows):
    header = " | ".join(NAMES[s] for s in SYSTEMS)
    lines = [f"| metric | {header} | Crier / Nchan |", "|" + " --- |" * (len(SYSTEMS) + 2)]
    for label, pick, fmt in rows:
        cells = [summary(values(runs, scenario, s, pick), fmt, (scenario, s) in runs) for s in SYSTEMS]
        lines.append(f"| {label} | {' | '.join(cells)} | {ratio(runs, scenario, pick)} |")
    return "\n".join(lines)


def correctness(runs):
    total = {s: [0, 0, 0, 0, 0] for s in SYSTEMS}
    for (scenario, system), rs in runs.items():
        for r in rs:
            if r is None:
                total[system][4] += 1
                continue
            total[system][0] += 1
            total[system][1] += r.get("lost", 0)
            total[system][2] += r.get("duplicated", 0)
            total[system][3] += r.get("out_of_order", 0)
    lines = ["| system | runs | lost | duplicated | out of order | failed runs |", "| --- | --- | --- | --- | --- | --- |"]
    for s in SYSTEMS:
        t = total[s]
        if t[0] or t[4]:
            lines.append(f"| {s} | {t[0]} | {t[1]} | {t[2]} | {t[3]} | {t[4]} |")
    return "\n".join(lines)


def cpu_split(r):
    cpu = r.get("cpu") or {}
    return cpu.get("server_secs"), cpu.get("generator_secs")


LATENCY = [
    ("deliveries/s", lambda r: r["deliveries_per_sec"], num),
    ("latency p50", lambda r: r["latency_us"]["p50"], ms),
    ("latency p90", lambda r: r["latency_us"]["p90"], ms),
    ("latency p99", lambda r: r["latency_us"]["p99"], ms),
    ("latency p99.9", lambda r: r["latency_us"]["p999"], ms),
    ("latency max", lambda r: r["latency_us"]["max"], ms),
    ("server CPU s", lambda r: cpu_split(r)[0], lambda v: f"{v:.2f}"),
    ("load generator CPU s", lambda r: cpu_split(r)[1], lambda v: f"{v:.2f}"),
]


def sweep_points(runs, system, pick):
    points = []
    for (scenario, s), rs in runs.items():
        m = re.fullmatch(r"sweep-(\d+)", scenario)
        if not m or s != system:
            continue
        vals = [pick(r) for r in rs if r is not None]
        if vals:
            points.append((int(m.group(1)), statistics.median(vals)))
    return sorted(points)


def sweep_table(runs):
    """One row per subscriber count: each system's deliveries/s, p99 and memory."""
    def at(system, pick):
        return dict(sweep_points(runs, system, pick))

    columns = [
        ("connected", lambda r: r["connected"], lambda v: f"{v:,.0f}"),
        ("deliveries/s", lambda r: r["deliveries_per_sec"], lambda v: f"{v:,.0f}"),
        ("p99", lambda r: r["latency_us"]["p99"], lambda v: f"{v / 1000:,.1f} ms"),
        ("PSS per stream", lambda r: (r.get("memory") or {}).get("pss_per_conn_bytes", 0),
         lambda v: f"{v / 1000:.1f} KB"),
    ]
    systems = [s for s in SYSTEMS if sweep_points(runs, s, lambda r: 0)] or list(SYSTEMS)
    header = "| subscribers | " + " | ".join(
        f"{NAMES[system]} {name}" for name, _, _ in columns for system in systems) + " |"
    lines = [header, "|" + " --- |" * (1 + len(systems) * len(columns))]
    counts = sorted({n for system in SYSTEMS for n, _ in sweep_points(runs, system, lambda r: 0)})
    values = {(name, system): at(system, pick) for name, pick, _ in columns for system in SYSTEMS}
    for n in counts:
        cells = []
        for name, _, fmt in columns:
            for system in systems:
                v = values[(name, system)].get(n)
                cells.append(fmt(v) if v is not None else "–")
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def svg(runs, path):
    width, height, pad = 760, 300, 60
    panels = [
        ("deliveries/s", lambda r: r["deliveries_per_sec"], 1.0),
        ("delivery latency p99 (ms)", lambda r: r["latency_us"]["p99"], 1000.0),
    ]
    colors = {"crier": "#1f6feb", "split": "#1a7f37", "nchan": "#d1242f"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height * 2}" font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>']
    for index, (title, pick, scale) in enumerate(panels):
        top = index * height
        series = {s: [(x, y / scale) for x, y in sweep_points(runs, s, pick)] for s in SYSTEMS}
        xs = [x for pts in series.values() for x, _ in pts] or [1]
        ys = [y for pts in series.values() for _, y in pts] or [1]
        xmax, ymax = max(xs), max(ys) * 1.1 or 1
        def px(x):
            return pad + (width - 2 * pad) * x / xmax
        def py(y):
            return top + height - pad + -(height - 2 * pad) * y / ymax
        parts.append(f'<text x="{width / 2}" y="{top + 20}" text-anchor="middle" font-size="14">{title} against subscribers (one channel)</text>')
        parts.append(f'<line x1="{pad}" y1="{py(0)}" x2="{width - pad}" y2="{py(0)}" stroke="black"/>')
        parts.append(f'<line x1="{pad}" y1="{py(0)}" x2="{pad}" y2="{top + pad}" stroke="black"/>')
        for tick in range(0, 5):
            yv = ymax * tick / 4
            parts.append(f'<text x="{pad - 6}" y="{py(yv) + 4}" text-anchor="end">{yv:,.0f}</text>')
        for x in sorted(set(xs)):
            parts.append(f'<text x="{px(x)}" y="{py(0) + 16}" text-anchor="middle">{x:,}</text>')
        for legend, (system, pts) in enumerate(series.items()):
            if not pts:
                continue
            path_d = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for i, (x, y) in enumerate(pts))
            parts.append(f'<path d="{path_d}" fill="none" stroke="{colors[system]}" stroke-width="2"/>')
            for x, y in pts:
                parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colors[system]}"/>')
            parts.append(f'<text x="{width - pad - 80}" y="{top + 40 + 16 * legend}" fill="{colors[system]}">{system}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def median_of(runs, scenario, system, pick):
    vals = values(runs, scenario, system, pick)
    return statistics.median(vals) if vals else None


# Rows of the ingest table: key, how bench/ingest.sh's median line starts, label.
INGEST_ROWS = [
    ("crier", "crier, durable", "Crier, durable (flush before `201`)"),
    ("crier-memory", "crier, in-memory", "Crier, `--durable-ack false`"),
    ("split", "split chat-service", "Split: chat-service, durable, publishing to Mosquitto"),
    ("nchan", "nchan (memory", "Nchan, in memory"),
    ("nchan-redis", "nchan + redis", "Nchan + Redis (`appendonly yes`, `appendfsync always`)"),
    ("bare-actix", "bare actix-web", "Bare actix-web handler, same POST, no store (the floor)"),
]


def ingest_medians(results):
    """POST/s medians from ingest.txt, by the keys of INGEST_ROWS."""
    path = os.path.join(results, "ingest.txt")
    found = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                m = re.match(r"\s+(.+?):\s+([0-9.]+) POST/s\s*$", line)
                if not m:
                    continue
                for key, prefix, _ in INGEST_ROWS:
                    if m.group(1).startswith(prefix):
                        found[key] = float(m.group(2))
    return found


def ingest_table(results):
    found = ingest_medians(results)
    nchan = found.get("nchan")
    lines = ["| system | POST/s (median) | / Nchan in memory |", "| --- | --- | --- |"]
    for key, _, label in INGEST_ROWS:
        if key not in found:
            continue
        rel = f"{found[key] / nchan:.2f}" if nchan else "–"
        lines.append(f"| {label} | {num(found[key])} | {rel} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def verdict(ok):
    return "met" if ok else "**not met**"


def targets(runs, results):
    def r(scenario, pick):
        c = median_of(runs, scenario, "crier", pick)
        n = median_of(runs, scenario, "nchan", pick)
        return (c / n) if c is not None and n else None
    pss = r("idle", lambda x: x["memory"]["pss_per_conn_bytes"])
    fan = r("fanout", lambda x: x["deliveries_per_sec"])
    fan_p99 = r("fanout", lambda x: x["latency_us"]["p99"])
    many = r("channels-max", lambda x: x["deliveries_per_sec"])
    many_p99 = r("channels-2000", lambda x: x["latency_us"]["p99"])
    ingest = ingest_medians(results)
    ingest_ratio = ingest["crier"] / ingest["nchan"] if {"crier", "nchan"} <= ingest.keys() else None
    storm = values(runs, "storm", "crier", lambda x: (x["storm"]["live_secs"], x["lost"], x["duplicated"]))
    storm_ok = bool(storm) and all(t <= 10 and lost == 0 and dup == 0 for t, lost, dup in storm)
    def f(v):
        return "–" if v is None else f"{v:.2f}"
    rows = [
        ("idle memory per stream (PSS) ≤ 0.5 × Nchan", f(pss), verdict(pss is not None and pss <= 0.5)),
        ("fan-out deliveries/s ≥ 2 × Nchan", f(fan), verdict(fan is not None and fan >= 2)),
        ("fan-out p99 ≤ Nchan's", f(fan_p99), verdict(fan_p99 is not None and fan_p99 <= 1)),
        ("many channels, max rate: deliveries/s ≥ 1.5 × Nchan", f(many), verdict(many is not None and many >= 1.5)),
        ("many channels, 2,000 msg/s: p99 ≤ Nchan's", f(many_p99), verdict(many_p99 is not None and many_p99 <= 1)),
        ("ingest POST/s (durable) ≥ 1 × Nchan", f(ingest_ratio), verdict(ingest_ratio is not None and ingest_ratio >= 1)),
        ("reconnect storm: all live within 10 s, 0 lost, 0 duplicated", "–", verdict(storm_ok)),
    ]
    lines = ["| target | Crier / Nchan | |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


# What a big-room run must show for its system to meet the pipeline targets.
BIGROOM_MESSAGES = 500
BIGROOM_POST_P99_US = 20_000


def bigroom_verdicts(runs, system):
    """Rows for one system's big room: every POST accepted, POST p99, deliveries
    against Nchan's, lossless; each with its verdict."""
    rs = [r for r in runs.get(("bigroom", system), []) if r is not None]
    if not rs:
        return []
    accepted = min(r.get("publish_ok", 0) for r in rs)
    post_p99 = median_of(runs, "bigroom", system, lambda r: r["post_latency_us"]["p99"])
    own = median_of(runs, "bigroom", system, lambda r: r["deliveries_per_sec"])
    nchan = median_of(runs, "bigroom", "nchan", lambda r: r["deliveries_per_sec"])
    ratio = own / nchan if own is not None and nchan else None
    clean = all(r.get("lost", 1) == 0 and r.get("duplicated", 1) == 0 and r.get("out_of_order", 1) == 0 for r in rs)
    name = {"crier": "all-in-one", "split": "split deployment"}[system]
    return [
        (f"big room, {name}: every message accepted", f"{accepted} of {BIGROOM_MESSAGES} (fewest in a run)",
         verdict(accepted >= BIGROOM_MESSAGES)),
        (f"big room, {name}: POST p99 ≤ 20 ms", "–" if post_p99 is None else ms(post_p99),
         verdict(post_p99 is not None and post_p99 <= BIGROOM_POST_P99_US)),
        (f"big room, {name}: deliveries/s ≥ 3 × Nchan", "–" if ratio is None else f"{ratio:.2f} × Nchan",
         verdict(ratio is not None and ratio >= 3)),
        (f"big room, {name}: 0 lost, duplicated or out of order", "every run" if clean else "not every run",
         verdict(clean)),
    ]


def pipeline_targets(runs, results):
    """The targets of the one-pipeline design: the big room on both deployments,
    and ingest against durable and in-memory peers."""
    rows = bigroom_verdicts(runs, "crier") + bigroom_verdicts(runs, "split")
    ingest = ingest_medians(results)
    def ratio(a, b):
        return ingest[a] / ingest[b] if {a, b} <= ingest.keys() else None
    durable = ratio("crier", "nchan-redis")
    memory = ratio("crier-memory", "nchan")
    rows.append(("ingest, durable: POST/s ≥ 3 × Nchan + Redis (AOF always)",
                 "–" if durable is None else f"{durable:.2f} ×",
                 verdict(durable is not None and durable >= 3)))
    rows.append(("ingest, `--durable-ack false`: POST/s ≥ 1 × Nchan in memory",
                 "–" if memory is None else f"{memory:.2f} ×",
                 verdict(memory is not None and memory >= 1)))
    lines = ["| target | measured | |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def ingest_section(results):
    path = os.path.join(results, "ingest.txt")
    if not os.path.exists(path):
        return "Not run."
    with open(path) as f:
        raw = "```\n" + f.read().strip() + "\n```"
    medians = ingest_table(results)
    section = f"{medians}\n\nEvery run:\n\n{raw}" if medians else raw
    profile = os.path.join(results, "post-profile.md")
    if os.path.exists(profile):
        with open(profile) as f:
            section += ("\n\n### Where the CPU of one POST goes\n\n"
                        "From `bench/profile-post.sh`: the same load, each process "
                        "sampled by `perf record` (attribution follows inlining, "
                        "so a library's code inlined into a caller counts as the "
                        "caller's).\n\n" + f.read().strip())
    return section


BIGROOM = [
    ("POSTs accepted (`2xx`)", lambda r: r["publish_ok"], num),
    ("POSTs refused as overloaded (`503`, posted again)", lambda r: r["publish_refused"], num),
    ("POST latency p50", lambda r: r["post_latency_us"]["p50"], ms),
    ("POST latency p99", lambda r: r["post_latency_us"]["p99"], ms),
    ("POST latency max", lambda r: r["post_latency_us"]["max"], ms),
    ("deliveries/s", lambda r: r["deliveries_per_sec"], num),
    ("delivery latency p50", lambda r: r["latency_us"]["p50"], ms),
    ("delivery latency p99", lambda r: r["latency_us"]["p99"], ms),
    ("delivery latency max", lambda r: r["latency_us"]["max"], ms),
    ("lost", lambda r: r["lost"], num),
    ("duplicated", lambda r: r["duplicated"], num),
    ("out of order", lambda r: r["out_of_order"], num),
    ("server CPU s", lambda r: cpu_split(r)[0], lambda v: f"{v:.2f}"),
]


def main():
    results, output = sys.argv[1], sys.argv[2]
    runs = load(results)
    pictures = os.path.join(os.path.dirname(os.path.abspath(output)), "docs")
    os.makedirs(pictures, exist_ok=True)
    svg(runs, os.path.join(pictures, "bench-sweep.svg"))
    notes = ""
    if os.path.exists("bench/notes.md"):
        with open("bench/notes.md") as f:
            notes = f.read().strip()
    rounds = max((len(v) for k, v in runs.items() if not k[0].startswith("sweep")), default=0)
    md = f"""# Benchmarks

Generated by `bench/run.sh` (then `bench/report.py`): Crier (the all-in-one `crier`,
release build, embedded broker, durable acknowledgements on), Split (the split
deployment: Mosquitto 2.0, `chat-service` with durable acknowledgements and one
`broadcast-sse` node, three processes) and Nchan (nginx 1.22 with
`libnginx-mod-nchan`, `bench/peers/nchan/`) on the same 2-core machine,
with the load generator `crier-bench` beside them, all on loopback. The
systems alternate within each round; every cell is the median of {rounds} runs with
the range in brackets, unless it says otherwise. The machine (2 cores, 24 GiB) is
shared, so single runs vary; ratios come from runs made side by side. The exact
server and `crier-bench` command lines of every scenario are in `bench/run.sh`;
each run's full JSON result is written to `target/bench/`.

## Targets

{targets(runs, results)}

### One pipeline

{pipeline_targets(runs, results)}

## Correctness over every run

{correctness(runs)}

## Idle: 10,000 SSE streams over 1,000 channels

Server memory per open stream, from `/proc/<pid>/smaps_rollup` (server and its
child processes) before and after the streams connected. For Split it is
`broadcast-sse`'s alone, the process that holds the streams; its server CPU, in
every table, is that of the three processes together.

{table(runs, "idle", [
    ("RSS per stream", lambda r: r["memory"]["rss_per_conn_bytes"], kb),
    ("PSS per stream", lambda r: r["memory"]["pss_per_conn_bytes"], kb),
    ("connect time, all streams", lambda r: r["connect_secs"], secs),
])}

## Fan-out: 1 channel, 10,000 subscribers, 200 messages as fast as accepted

{table(runs, "fanout", LATENCY)}

## Many channels: 1,000 channels × 10 subscribers, 20,000 messages

### 2,000 messages/s

{table(runs, "channels-2000", LATENCY)}

### 5,000 messages/s

{table(runs, "channels-5000", LATENCY)}

### As fast as accepted (32 publishing connections)

{table(runs, "channels-max", [("messages/s accepted", lambda r: r["messages_per_sec"], num)] + LATENCY)}

## Reconnect storm: 10,000 subscribers drop and reconnect with Last-Event-ID

20,000 messages at 2,000/s over 1,000 channels; halfway through every subscriber
drops its stream and reconnects at once.

{table(runs, "storm", [
    ("time until all are live again", lambda r: r["storm"]["live_secs"], secs),
    ("lost", lambda r: r["lost"], num),
    ("duplicated", lambda r: r["duplicated"], num),
])}

## Big room: 1 channel, 10,000 subscribers, one publisher at 50 messages/s

One connection posts 500 messages in order, 50 a second for 10 s, each after the
answer to the one before. POST latency is from writing a POST to reading its
answer: a busy channel should not slow its publisher.

{table(runs, "bigroom", BIGROOM)}

## Subscribers against throughput and latency (one run per point)

One channel, 100 messages as fast as accepted, 1,000 to 18,000 subscribers.

![deliveries/s and p99 latency against subscribers](docs/bench-sweep.svg)

{sweep_table(runs)}

18,000 is about the most one process holds here: the open-files limit is
20,000 per process (a hard limit on this machine) and it binds both servers long
before memory does.

## Ingest: POST/s, 64 connections (wrk)

{ingest_section(results)}

{notes}
"""
    with open(output, "w") as f:
        f.write(md)


if __name__ == "__main__":
    main()
