//! How late each broadcast-sse node writes its messages to the streams.
//!
//! A node whose stream threads cannot keep up holds messages between the
//! broker and the socket, where no queue of the chat-service sees them. While
//! its fan-out delay (the median, over [`REPORT_EVERY`], of the time from a
//! message's arrival on the node to its write) is at least [`FLOOR`], the
//! node publishes it on `{prefix}/nodes/{node}/fanout` at QoS 0, not
//! retained, and says `0` once when it falls back under. A [`Watcher`] keeps
//! the latest report of each node for [`FRESH_FOR`], and a chat-service with
//! `--max-fanout-delay` refuses posts while the longest is over it, as it
//! does when its own store falls behind.
//!
//! [`Watcher`]: super::Watcher

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How often a node that lags says by how much.
pub const REPORT_EVERY: Duration = Duration::from_millis(10);
/// A fan-out delay under this is not reported.
pub const FLOOR: Duration = Duration::from_millis(1);
/// How long a report counts without the next one (ten reports missed).
pub const FRESH_FOR: Duration = Duration::from_millis(500);

/// `{prefix}/nodes/{node}/fanout`: one node's fan-out delay.
pub fn fanout_topic(prefix: &str, node: &str) -> String {
    format!("{prefix}/nodes/{node}/fanout")
}

/// What a node publishes on its fan-out topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanoutReport {
    /// The median time from a message's arrival to its write, in µs.
    pub delay_us: u64,
}

/// The nodes' latest fan-out delays. Cheap to clone; reading the longest is
/// two atomic loads, for a check on every post.
#[derive(Clone)]
pub struct FanoutDelays {
    shared: Arc<Shared>,
}

struct Shared {
    epoch: Instant,
    /// node → its last delay (µs) and when it came.
    nodes: Mutex<HashMap<String, (u64, Instant)>>,
    /// The longest fresh delay at the last report (µs).
    longest_us: AtomicU64,
    /// Until when that holds (µs since `epoch`) without another report.
    until_us: AtomicU64,
}

impl Default for FanoutDelays {
    fn default() -> Self {
        FanoutDelays {
            shared: Arc::new(Shared {
                epoch: Instant::now(),
                nodes: Mutex::new(HashMap::new()),
                longest_us: AtomicU64::new(0),
                until_us: AtomicU64::new(0),
            }),
        }
    }
}

impl FanoutDelays {
    /// The longest delay a node reported within [`FRESH_FOR`] (zero when none).
    pub fn longest(&self) -> Duration {
        if self.micros(Instant::now()) >= self.shared.until_us.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        Duration::from_micros(self.shared.longest_us.load(Ordering::Relaxed))
    }

    /// Takes a node's report (`0`: it keeps up again).
    pub fn report(&self, node: &str, report: FanoutReport) {
        let now = Instant::now();
        let mut nodes = self.lock();
        if report.delay_us == 0 {
            nodes.remove(node);
        } else {
            nodes.insert(node.to_string(), (report.delay_us, now));
        }
        self.settle(&mut nodes, now);
    }

    /// Forgets a node that left (its liveness topic emptied).
    pub fn forget(&self, node: &str) {
        let mut nodes = self.lock();
        if nodes.remove(node).is_some() {
            self.settle(&mut nodes, Instant::now());
        }
    }

    /// Drops stale reports and publishes the longest of the rest, which
    /// counts until that report itself goes stale.
    fn settle(&self, nodes: &mut HashMap<String, (u64, Instant)>, now: Instant) {
        nodes.retain(|_, (_, at)| now.saturating_duration_since(*at) < FRESH_FOR);
        let (longest, at) = nodes
            .values()
            .max_by_key(|(delay, _)| *delay)
            .copied()
            .unwrap_or((0, now));
        self.shared.longest_us.store(longest, Ordering::Relaxed);
        self.shared
            .until_us
            .store(self.micros(at + FRESH_FOR), Ordering::Relaxed);
    }

    fn micros(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.shared.epoch);
        u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
    }

    /// The table holds no invariant a panic could break half-way.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Instant)>> {
        self.shared
            .nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn late(ms: u64) -> FanoutReport {
        FanoutReport {
            delay_us: ms * 1000,
        }
    }

    #[test]
    fn the_longest_delay_of_the_nodes_counts_until_a_node_says_it_keeps_up() {
        let delays = FanoutDelays::default();
        assert_eq!(delays.longest(), Duration::ZERO, "no report yet");
        delays.report("a", late(30));
        delays.report("b", late(80));
        assert_eq!(delays.longest(), Duration::from_millis(80));
        delays.report("b", late(0));
        assert_eq!(delays.longest(), Duration::from_millis(30));
        delays.forget("a");
        assert_eq!(delays.longest(), Duration::ZERO);
    }

    #[test]
    fn a_report_not_followed_by_another_stops_counting() {
        let delays = FanoutDelays::default();
        delays.report("a", late(80));
        std::thread::sleep(FRESH_FOR + Duration::from_millis(20));
        assert_eq!(delays.longest(), Duration::ZERO, "a node that fell silent");
        delays.report("b", late(10));
        assert_eq!(
            delays.longest(),
            Duration::from_millis(10),
            "the silent node's old report is dropped"
        );
    }

    #[test]
    fn a_late_report_stops_counting_when_it_goes_stale_though_another_node_reported_since() {
        let delays = FanoutDelays::default();
        delays.report("a", late(80));
        std::thread::sleep(FRESH_FOR - Duration::from_millis(100));
        delays.report("b", late(10));
        assert_eq!(delays.longest(), Duration::from_millis(80), "a is fresh");
        std::thread::sleep(Duration::from_millis(150));
        assert_ne!(
            delays.longest(),
            Duration::from_millis(80),
            "a's report went stale; b's later one did not keep it fresh"
        );
    }

    #[test]
    fn a_report_is_the_delay_in_microseconds() {
        let json = serde_json::to_string(&late(12)).expect("serialises");
        assert_eq!(json, r#"{"delay_us":12000}"#);
    }
}
