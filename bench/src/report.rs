//! The run's result: one JSON object on stdout for scripts, a few lines on
//! stderr for people.

use crate::memory::MemSample;
use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub sub_url: String,
    pub pub_url: String,
    pub subscribers: u64,
    pub channels: u64,
    pub workers: u64,
    pub messages: u64,
    /// Requested publish rate in messages/s; `null` means as fast as possible.
    pub rate: Option<f64>,
    pub pub_connections: usize,

    pub connected: u64,
    pub connect_failed: u64,
    pub connect_errors: u64,
    /// From starting the workers until the last subscriber answered `200`.
    pub connect_secs: f64,
    /// Per connection: from its turn in the connect pacing until `200`.
    pub connect_us: Percentiles,

    /// POSTs answered `2xx`.
    pub publish_ok: u64,
    /// POSTs not stored in the end: answered with an error other than `503`,
    /// timed out or broken off.
    pub publish_failed: u64,
    /// `503` answers (overloaded); each time the same message was posted again.
    pub publish_refused: u64,
    pub publish_secs: f64,
    pub messages_per_sec: f64,
    /// Each accepted POST, from writing the request to reading its answer, microseconds.
    pub post_latency_us: Percentiles,

    pub deliveries: u64,
    pub expected_deliveries: u64,
    /// From the first publish until the last delivery.
    pub delivery_secs: f64,
    pub deliveries_per_sec: f64,
    /// Send stamp to receipt, microseconds.
    pub latency_us: Percentiles,

    pub lost: u64,
    pub duplicated: u64,
    /// A message arrived after one that was sent only once it was acknowledged.
    pub out_of_order: u64,
    /// Concurrently published messages delivered in another order than sent (not an error).
    pub reordered_concurrent: u64,
    /// Stamped messages from before this run (history of a reused channel).
    pub stale: u64,
    pub reconnects: u64,
    pub complete_subscribers: u64,
    pub incomplete_subscribers: u64,

    pub storm: Option<StormSummary>,
    pub memory: Option<Memory>,
    pub cpu: Cpu,
    pub errors: Vec<String>,
    /// No loss, duplicate, reordering, failed publish, failed connect or storm failure.
    pub lossless: bool,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct StormSummary {
    pub dropped: u64,
    pub reconnected: u64,
    pub failed: u64,
    /// From the storm until every subscriber had its `200` again.
    pub live_secs: f64,
}

/// CPU seconds from "all connected" to the end of the drain.
#[derive(Debug, Default, Serialize)]
pub struct Cpu {
    pub wall_secs: f64,
    /// The `--server-pid` processes and their descendants.
    pub server_secs: f64,
    /// The same, for each `--server-pid` on its own.
    pub server_by_pid: Vec<PidCpu>,
    /// This process and its workers.
    pub generator_secs: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct PidCpu {
    pub pid: u32,
    pub secs: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Memory {
    pub pids: Vec<u32>,
    pub before: MemSample,
    /// All subscribers connected, nothing published yet.
    pub connected: MemSample,
    /// After the drain, subscribers still connected.
    pub end: MemSample,
    /// (connected − before) / connected subscribers.
    pub rss_per_conn_bytes: f64,
    pub pss_per_conn_bytes: f64,
}

impl Memory {
    pub fn new(
        pids: Vec<u32>,
        before: MemSample,
        connected: MemSample,
        end: MemSample,
        conns: u64,
    ) -> Self {
        let per = |after: u64, before: u64| {
            if conns == 0 {
                0.0
            } else {
                ((after as f64 - before as f64) / conns as f64).round()
            }
        };
        Self {
            rss_per_conn_bytes: per(connected.rss_bytes, before.rss_bytes),
            pss_per_conn_bytes: per(connected.pss_bytes, before.pss_bytes),
            pids,
            before,
            connected,
            end,
        }
    }
}

impl Report {
    /// A few lines for the terminal.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "subscribers {}/{} connected over {} channels in {:.2} s (per connection p50 {:.1} ms, p99 {:.1} ms), {} workers\n",
            self.connected,
            self.subscribers,
            self.channels,
            self.connect_secs,
            self.connect_us.p50 as f64 / 1000.0,
            self.connect_us.p99 as f64 / 1000.0,
            self.workers,
        );
        if self.messages > 0 {
            s += &format!(
                "published {} ok, {} failed, {} refused as overloaded and posted again in {:.2} s = {:.0} msg/s; \
                 POST latency µs p50 {} p99 {} max {}\n\
                 deliveries {} of {} in {:.2} s = {:.0}/s; latency µs p50 {} p90 {} p99 {} p99.9 {} max {}\n",
                self.publish_ok,
                self.publish_failed,
                self.publish_refused,
                self.publish_secs,
                self.messages_per_sec,
                self.post_latency_us.p50,
                self.post_latency_us.p99,
                self.post_latency_us.max,
                self.deliveries,
                self.expected_deliveries,
                self.delivery_secs,
                self.deliveries_per_sec,
                self.latency_us.p50,
                self.latency_us.p90,
                self.latency_us.p99,
                self.latency_us.p999,
                self.latency_us.max,
            );
        }
        s += &format!(
            "lost {} duplicated {} out-of-order {} (concurrent reordered {}) stale {} unasked reconnects {}\n",
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.reordered_concurrent,
            self.stale,
            self.reconnects
        );
        if let Some(storm) = &self.storm {
            s += &format!(
                "storm: {} dropped, {} back in {:.2} s, {} failed\n",
                storm.dropped, storm.reconnected, storm.live_secs, storm.failed
            );
        }
        if let Some(m) = &self.memory {
            s += &format!(
                "server memory ({} processes): RSS {:.1} → {:.1} → {:.1} MiB, PSS {:.1} → {:.1} → {:.1} MiB; \
                 per connection RSS {:.0} B, PSS {:.0} B\n",
                m.connected.processes,
                mib(m.before.rss_bytes),
                mib(m.connected.rss_bytes),
                mib(m.end.rss_bytes),
                mib(m.before.pss_bytes),
                mib(m.connected.pss_bytes),
                mib(m.end.pss_bytes),
                m.rss_per_conn_bytes,
                m.pss_per_conn_bytes,
            );
        }
        s += &format!(
            "cpu over {:.2} s after connecting: server {:.2} s, generator {:.2} s\n",
            self.cpu.wall_secs, self.cpu.server_secs, self.cpu.generator_secs
        );
        for e in &self.errors {
            s += &format!("first error: {e}\n");
        }
        s += if self.lossless {
            "lossless: yes\n"
        } else {
            "lossless: NO\n"
        };
        s
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
