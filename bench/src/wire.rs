//! What the coordinator and its worker processes say to each other: one JSON
//! object per line, commands on the worker's stdin, events on its stdout.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Everything a worker needs to open its share of the subscribers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// This worker holds the subscribers `i` with `i % workers == index`.
    pub index: u64,
    pub workers: u64,
    pub subscribers: u64,
    pub channels: u64,
    pub channel_salt: u32,
    pub sub_url: String,
    pub source_addrs: u32,
    /// Connections per second for this worker; `None`: unpaced.
    pub connect_rate: Option<f64>,
    pub storm_connect_rate: Option<f64>,
    pub max_reconnects: u32,
    /// Stamps older than this (nanoseconds since the epoch) belong to an earlier run.
    pub run_start_nanos: u64,
    /// The worker exits on its own after this long, whatever happens.
    pub lifetime_secs: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Drop every stream at once and reconnect with `Last-Event-ID`.
    Storm,
    /// Publishing is over: `expected[c]` messages went to channel `c`.
    Drain {
        expected: Vec<u64>,
        drain_ms: u64,
    },
    Quit,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Connected(Connected),
    Storm(StormReport),
    Result(WorkerResult),
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Connected {
    pub connected: u64,
    pub failed: u64,
    /// Attempts that failed, including ones that succeeded on a retry.
    pub connect_errors: u64,
    pub connect_us: Hist,
    pub first_error: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StormReport {
    pub dropped: u64,
    pub reconnected: u64,
    pub failed: u64,
    /// From the storm command until the last stream answered `200`.
    pub live_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    pub deliveries: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Late arrivals that were published concurrently with what came first.
    pub reordered_concurrent: u64,
    /// Stamped events from before this run (replayed history of a reused channel).
    pub stale: u64,
    /// Streams that ended without being asked to and were reopened.
    pub reconnects: u64,
    pub complete_subscribers: u64,
    pub incomplete_subscribers: u64,
    pub latency_us: Hist,
    pub last_delivery_nanos: u64,
    pub first_error: Option<String>,
}

/// A histogram as `(value, count)` pairs, to merge across processes.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Hist(pub Vec<(u64, u64)>);

impl Hist {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        Self(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    pub fn merge_into(&self, h: &mut Histogram<u64>) {
        for &(value, count) in &self.0 {
            h.saturating_record_n(value, count);
        }
    }
}

/// Microseconds from 1 µs to an hour at three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Only invalid bounds make this fail, and these are fixed and valid.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("fixed histogram bounds are valid")
}

/// Nanoseconds since the Unix epoch by the realtime clock, which every
/// process on the machine shares.
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_merge_through_json() {
        let mut a = new_histogram();
        for v in [10, 20, 20, 5000] {
            a.saturating_record(v);
        }
        let json = serde_json::to_string(&Hist::from_histogram(&a)).expect("serializes");
        let back: Hist = serde_json::from_str(&json).expect("parses");
        let mut merged = new_histogram();
        back.merge_into(&mut merged);
        back.merge_into(&mut merged);
        assert_eq!(merged.len(), 8);
        assert_eq!(merged.value_at_quantile(0.5), 20);
        assert!(merged.equivalent(merged.max(), 5000));
    }

    #[test]
    fn commands_are_tagged_json() {
        let line = serde_json::to_string(&Command::Drain {
            expected: vec![2, 1],
            drain_ms: 5,
        })
        .expect("serializes");
        assert_eq!(line, r#"{"cmd":"drain","expected":[2,1],"drain_ms":5}"#);
    }
}
