#!/usr/bin/env python3
"""Renders bench/profile-post.sh's measurements as Markdown: the CPU time of one
POST, by thread and by the code it ran, for Crier and for a bare actix-web
handler of the same POST.

    post_profile.py CRIER_PREFIX BARE_PREFIX

Each prefix names PREFIX.txt ("POST/s cpu_ticks ticks_per_sec seconds") and
PREFIX.perf (`perf report --no-children --stdio --sort comm,dso,sym -g none
--field-separator ';'`).
"""
import re
import sys

LINE = re.compile(r"^\s*([\d.]+)%\s*;\s*([^;]*?)\s*;\s*([^;]*?)\s*;\s*\[(.)\]\s+(.*?)\s*$")

# (component, pattern on the symbol); the first that matches names a sample.
KERNEL = [
    ("kernel: TCP and loopback", r"tcp|udp|\bip_|ipv|sock|skb|net_|netif|dev_|loopback|inet|sendmsg|recvmsg|sendto|recvfrom|napi|__sys_|nf_|neigh|csum"),
    ("kernel: device I/O (virtio kicks)", r"iowrite|ioread|virtqueue|vring|virtio"),
    ("kernel: file writes and sync", r"ext4|jbd2|sync|blk|bio|filemap|iomap|xfs|btrfs|pwrite|vfs_|folio|page_cache|writeback|mpage"),
    ("kernel: scheduling, wake-ups, interrupts", r"schedule|irqentry|softirq|spin_unlock|read_tsc|futex|wake|switch|epoll|ep_|hrtimer|tick|irq|idle|pick_next|enqueue|dequeue|update_|select_task|ttwu|finish_task|sched|rcu|timer"),
]
USER = [
    ("sled (store engine)", r"sled::|crc32|crossbeam_epoch|zstd"),
    ("MQTT (embedded broker, client)", r"rumqtt|mqttbytes|flume"),
    ("JSON (serde)", r"serde_json|serde::|_serde::"),
    ("actix-web (HTTP, routing)", r"actix|httparse|regex|\bhttp::|h2::|bytestring"),
    ("tokio (tasks, timers, I/O)", r"tokio::|mio::|parking_lot"),
    ("Crier's own code", r"^(chat_service|broadcast_sse|crier|crier_protocol|protocol|bare_actix)::|\bcrier::|uuid::"),
    ("allocator", r"jemalloc|_rjem|\bje_|malloc|\bfree\b|realloc|calloc|cfree"),
    ("memory copies", r"memcpy|memmove|memset|memcmp"),
    ("Rust std, libc, other", r"."),
]


def component(kind, symbol):
    if kind == "k":
        for name, pattern in KERNEL:
            if re.search(pattern, symbol):
                return name
        return "kernel: other"
    for name, pattern in USER:
        if re.search(pattern, symbol):
            return name
    return "Rust std, libc, other"


def thread(comm):
    """Groups numbered threads of one kind."""
    comm = re.sub(r"\d+", "N", comm)
    return {
        "actix-server wo": "HTTP workers (actix)",
        "actix-rt|system": "HTTP workers (actix)",
        "router-N": "embedded broker (router)",
        "vN-N": "embedded broker (connections)",
        "sled-io-N": "sled's I/O threads",
        "crier": "main thread (publisher, subscriber, hub)",
        "bare-actix": "main thread",
        "store-writer": "store writer (insert and sync)",
        "embedded-mqtt": "embedded broker",
        "tokio-runtime-w": "blocking pool (sled reads)",
    }.get(comm, comm)


def load(prefix):
    with open(prefix + ".txt") as f:
        rps, ticks, per_sec, seconds = f.read().split()
    cpu_secs = int(ticks) / int(per_sec)
    posts = float(rps) * float(seconds)
    by_component, by_thread = {}, {}
    total = 0.0
    with open(prefix + ".perf") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            share, comm, kind, symbol = float(m.group(1)), m.group(2), m.group(4), m.group(5)
            total += share
            key = component(kind, symbol)
            by_component[key] = by_component.get(key, 0.0) + share
            group = thread(comm)
            by_thread[group] = by_thread.get(group, 0.0) + share
    us_per_post = cpu_secs * 1e6 / posts if posts else 0.0
    scale = us_per_post / total if total else 0.0
    return {
        "rps": float(rps),
        "cpu_secs": cpu_secs,
        "seconds": float(seconds),
        "us": us_per_post,
        "components": {k: v * scale for k, v in by_component.items()},
        "threads": {k: v * scale for k, v in by_thread.items()},
    }


def us(v):
    return f"{v:.1f} µs"


def render(crier, bare):
    out = [
        f"Measured over {crier['seconds']:.0f} s of each run: Crier answered "
        f"{crier['rps']:,.0f} POST/s using {crier['cpu_secs'] / crier['seconds']:.2f} cores, "
        f"the bare handler {bare['rps']:,.0f} POST/s using "
        f"{bare['cpu_secs'] / bare['seconds']:.2f} cores (the load generator had the rest).",
        "",
        "| where the CPU goes | Crier, per POST | bare actix-web, per POST | Crier − bare |",
        "| --- | --- | --- | --- |",
    ]
    names = sorted(set(crier["components"]) | set(bare["components"]),
                   key=lambda k: -crier["components"].get(k, 0.0))
    for name in names:
        c, b = crier["components"].get(name, 0.0), bare["components"].get(name, 0.0)
        out.append(f"| {name} | {us(c)} | {us(b)} | {us(c - b)} |")
    out.append(f"| **all** | **{us(crier['us'])}** | **{us(bare['us'])}** | **{us(crier['us'] - bare['us'])}** |")
    out += ["", "Crier's by thread:", "", "| thread | per POST |", "| --- | --- |"]
    for name, v in sorted(crier["threads"].items(), key=lambda kv: -kv[1]):
        if v >= 0.05:
            out.append(f"| {name} | {us(v)} |")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(render(load(sys.argv[1]), load(sys.argv[2])))
