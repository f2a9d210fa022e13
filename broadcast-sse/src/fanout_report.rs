//! Tells the chat-services how late this node writes its messages to the
//! streams ([`server::presence::fanout`]), so that they refuse posts while it
//! cannot keep up instead of letting messages wait here: the queue of a node
//! whose stream threads are behind is where the fastest rate's latency went.
//!
//! The samples are the fan-out histogram's (one write in
//! [`crate::metrics::LAG_SAMPLE_EVERY`] per thread); each period reports
//! their median, so a few slow clients among many streams do not make a
//! node look late.

use std::sync::Mutex;
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use server::mqtt::BrokerStatus;
use server::presence::fanout::{FLOOR, FanoutReport, REPORT_EVERY, fanout_topic};
use tokio::time::MissedTickBehavior;

/// Samples kept per period (µs); a busy node takes this many at most.
const SAMPLES_KEPT: usize = 256;
/// Fewer samples than this in a period say nothing: a node this quiet is not
/// behind.
const MIN_SAMPLES: usize = 8;

/// The process's samples of the period.
static SAMPLES: Samples = Samples::new();

/// Keeps one sample of the time from a message's arrival to its write.
pub fn sample(on_node: Duration) {
    SAMPLES.add(on_node);
}

/// One period's samples (µs), at most [`SAMPLES_KEPT`].
struct Samples(Mutex<Vec<u32>>);

impl Samples {
    const fn new() -> Self {
        Samples(Mutex::new(Vec::new()))
    }

    fn add(&self, on_node: Duration) {
        let micros = u32::try_from(on_node.as_micros()).unwrap_or(u32::MAX);
        let mut samples = self.lock();
        if samples.len() < SAMPLES_KEPT {
            samples.push(micros);
        }
    }

    /// The median of the samples since the last call, if there were enough.
    fn take_median(&self) -> Option<Duration> {
        let mut samples = std::mem::take(&mut *self.lock());
        if samples.len() < MIN_SAMPLES {
            return None;
        }
        let middle = samples.len() / 2;
        let (_, median, _) = samples.select_nth_unstable(middle);
        Some(Duration::from_micros(u64::from(*median)))
    }

    /// The samples hold no invariant a panic could break half-way.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u32>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What to publish for a period's median: the delay while at least
/// [`FLOOR`], a `0` once when it falls back under, else nothing.
fn report_for(median: Option<Duration>, reported_late: bool) -> Option<FanoutReport> {
    let late = median.filter(|median| *median >= FLOOR);
    match late {
        Some(delay) => Some(FanoutReport {
            delay_us: u64::try_from(delay.as_micros()).unwrap_or(u64::MAX),
        }),
        None if reported_late => Some(FanoutReport { delay_us: 0 }),
        None => None,
    }
}

/// Publishes this node's fan-out delay (QoS 0, on its connection to the
/// broker) for as long as the process runs.
pub async fn report(node: String, client: AsyncClient, status: BrokerStatus, prefix: String) {
    let topic = fanout_topic(&prefix, &node);
    let mut interval = tokio::time::interval(REPORT_EVERY);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut reported_late = false;
    loop {
        interval.tick().await;
        let Some(report) = report_for(SAMPLES.take_median(), reported_late) else {
            continue;
        };
        if !status.is_connected() {
            continue;
        }
        let payload = serde_json::to_vec(&report).unwrap_or_default();
        // A full request queue skips a report: the next says the same again.
        if client
            .try_publish(topic.clone(), QoS::AtMostOnce, false, payload)
            .is_ok()
        {
            reported_late = report.delay_us > 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_period_reports_the_median_of_enough_samples_and_starts_afresh() {
        let samples = Samples::new();
        for _ in 0..3 {
            samples.add(2 * MS);
        }
        assert_eq!(samples.take_median(), None, "too few to say anything");
        for ms in [1, 2, 3, 4, 5, 6, 7, 900, 1000] {
            samples.add(ms * MS);
        }
        assert_eq!(
            samples.take_median(),
            Some(5 * MS),
            "two slow writes move the median one place"
        );
        assert_eq!(samples.take_median(), None, "a new period");
        for _ in 0..SAMPLES_KEPT + 10 {
            samples.add(MS);
        }
        assert_eq!(samples.lock().len(), SAMPLES_KEPT, "bounded");
    }

    #[test]
    fn a_late_node_reports_until_it_keeps_up_and_says_so_once() {
        let late = |ms: u64| {
            Some(FanoutReport {
                delay_us: ms * 1000,
            })
        };
        assert_eq!(report_for(Some(30 * MS), false), late(30));
        assert_eq!(report_for(Some(30 * MS), true), late(30));
        assert_eq!(
            report_for(Some(MS / 2), true),
            late(0),
            "back under the floor"
        );
        assert_eq!(report_for(None, true), late(0), "gone quiet");
        assert_eq!(report_for(Some(MS / 2), false), None, "said already");
        assert_eq!(report_for(None, false), None);
    }
}
