//! Admission by waiting time, not by queue length.
//!
//! The ingest queue holds thousands of appends, so under a burst a new POST
//! would wait behind all of them: accepted, but answered a hundred
//! milliseconds later, and every message after it as late (bufferbloat). Like
//! CoDel for packets, the store refuses an append at the door once appends
//! are waiting longer than a budget (`--max-queue-delay`), and takes them
//! again as soon as the wait falls back under it. A refused append is
//! answered `503` with `Retry-After` and stores nothing; an accepted one is
//! never dropped. The queue's length stays the hard limit behind it.
//!
//! How long a new append would wait is estimated from two clocks the writer
//! keeps: how long the oldest append of its last batch had waited (a
//! standing queue), and how long the queue has been waiting since the writer
//! last took from it (a writer stuck in a slow sync). Both count only while
//! appends are waiting: an idle store admits at once. What an append waits
//! for the batch before it to be written and synced is the store's service
//! time, not a queue: the writer's last cycle is taken off the wait, so a
//! slow disk alone refuses nothing, and the budget bounds what a queue adds
//! (CoDel's target, likewise, sits above a link's own time). As in CoDel, a burst
//! that the writer drains within [`INTERVAL`] is let through: appends are
//! refused once every check for that long found the wait over the budget,
//! and until one finds it back under.
//!
//! A message can also wait past the store: on a broadcast-sse node whose
//! stream threads cannot keep up, where no queue of ours sees it. The nodes
//! report that delay through the broker ([`server::presence::fanout`]); with
//! `--max-fanout-delay`, appends are refused at once while the longest report
//! is over it (a report is already a median over its period). It is off by
//! default: on the benchmark's two cores it halved the fastest rate's p99 and
//! took a third of its throughput (BENCHMARKS.md).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use server::presence::fanout::FanoutDelays;

/// How long the wait must stay over the budget before appends are refused
/// (CoDel's interval: a burst is absorbed, a standing queue is not).
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);

pub(crate) struct Admission {
    /// `None`: admit whatever fits in the queue.
    budget: Option<Duration>,
    epoch: Instant,
    /// Appends queued and not taken by the writer yet.
    waiting: AtomicUsize,
    /// How long the oldest append of the writer's last batch had waited (µs).
    last_batch_wait: AtomicU64,
    /// Since when the appends still waiting have waited at least (µs since
    /// `epoch`): when the queue last became non-empty, or the writer last
    /// took from it.
    waiting_since: AtomicU64,
    /// How long the writer's last cycle took: writing a batch and syncing it
    /// (µs).
    last_cycle: AtomicU64,
    /// Since when the wait has been over the budget (µs since `epoch`, plus
    /// one so that 0 means "not over").
    over_since: AtomicU64,
    /// The broadcast nodes' fan-out delays and their budget, once followed.
    fanout: OnceLock<(FanoutDelays, Duration)>,
}

impl Admission {
    pub(crate) fn new(budget: Option<Duration>) -> Self {
        Admission {
            budget,
            epoch: Instant::now(),
            waiting: AtomicUsize::new(0),
            last_batch_wait: AtomicU64::new(0),
            waiting_since: AtomicU64::new(0),
            last_cycle: AtomicU64::new(0),
            over_since: AtomicU64::new(0),
            fanout: OnceLock::new(),
        }
    }

    /// Refuses appends, from now on, also while a node's fan-out delay is
    /// over `budget` (the first call counts).
    pub(crate) fn follow_fanout(&self, delays: FanoutDelays, budget: Duration) {
        if self.fanout.set((delays, budget)).is_err() {
            log::debug!("the nodes' fan-out delays were followed already");
        }
    }

    /// Whether an append queued now would wait longer than the budget, as
    /// appends have for at least [`INTERVAL`], or a node writes to its
    /// streams later than its own budget.
    pub(crate) fn is_over_budget(&self) -> bool {
        if self.fanout_is_late() {
            return true;
        }
        let Some(budget) = self.budget else {
            return false;
        };
        let now = self.micros(Instant::now());
        if self.expected_wait(now) <= micros(budget) {
            self.over_since.store(0, Ordering::Relaxed);
            return false;
        }
        // Counted from the first check that saw it over, not back-dated from
        // the estimate: one reading of clocks that two threads write (a
        // submitter held off the CPU between its two stores) may be stale,
        // and only a wait seen over the budget for a whole interval refuses.
        let since = match self.over_since.load(Ordering::Relaxed) {
            0 => {
                self.over_since.store(now + 1, Ordering::Relaxed);
                now + 1
            }
            since => since,
        };
        (now + 1).saturating_sub(since) >= micros(INTERVAL)
    }

    fn fanout_is_late(&self) -> bool {
        self.fanout
            .get()
            .is_some_and(|(delays, budget)| delays.longest() > *budget)
    }

    /// How long an append queued at `now` would wait (µs) beyond the
    /// writer's own cycle, as far as the writer's clocks tell.
    fn expected_wait(&self, now: u64) -> u64 {
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let waited = now.saturating_sub(self.waiting_since.load(Ordering::Relaxed));
        let waited = waited.max(self.last_batch_wait.load(Ordering::Relaxed));
        waited.saturating_sub(self.last_cycle.load(Ordering::Relaxed))
    }

    /// An append was queued.
    pub(crate) fn queued(&self) {
        if self.waiting.fetch_add(1, Ordering::Relaxed) == 0 {
            self.waiting_since
                .store(self.micros(Instant::now()), Ordering::Relaxed);
        }
    }

    /// A queued append did not fit after all.
    pub(crate) fn not_queued(&self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }

    /// The writer took `count` appends at `now`, the oldest queued at `oldest`.
    pub(crate) fn taken(&self, count: usize, oldest: Instant, now: Instant) {
        if count == 0 {
            return;
        }
        self.last_batch_wait.store(
            micros(now.saturating_duration_since(oldest)),
            Ordering::Relaxed,
        );
        self.waiting_since
            .store(self.micros(now), Ordering::Relaxed);
        self.waiting.fetch_sub(count, Ordering::Relaxed);
    }

    /// The writer finished a cycle (a batch written and synced) that took
    /// `took`.
    pub(crate) fn cycled(&self, took: Duration) {
        self.last_cycle.store(micros(took), Ordering::Relaxed);
    }

    fn micros(&self, at: Instant) -> u64 {
        micros(at.saturating_duration_since(self.epoch))
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_millis(20);

    #[test]
    fn an_idle_store_admits_however_long_ago_it_last_wrote() {
        let admission = Admission::new(Some(BUDGET));
        let long_ago = Instant::now();
        admission.queued();
        admission.taken(1, long_ago, long_ago);
        std::thread::sleep(BUDGET * 2);
        assert!(!admission.is_over_budget());
    }

    #[test]
    fn appends_waiting_past_the_budget_for_an_interval_refuse_the_next_until_taken() {
        let admission = Admission::new(Some(BUDGET));
        admission.queued();
        assert!(!admission.is_over_budget(), "just queued");
        std::thread::sleep(BUDGET * 2);
        assert!(!admission.is_over_budget(), "over the budget, not for long");
        std::thread::sleep(INTERVAL);
        assert!(admission.is_over_budget(), "the writer took nothing since");
        let now = Instant::now();
        admission.taken(1, now, now);
        assert!(!admission.is_over_budget(), "nothing waits any more");
    }

    #[test]
    fn a_standing_queue_refuses_while_its_batches_wait_too_long() {
        let admission = Admission::new(Some(BUDGET));
        for _ in 0..3 {
            admission.queued();
        }
        let now = Instant::now();
        admission.taken(1, now - BUDGET * 3, now);
        assert!(!admission.is_over_budget(), "a burst, so far");
        std::thread::sleep(INTERVAL);
        let now = Instant::now();
        admission.taken(1, now - BUDGET * 3, now);
        assert!(admission.is_over_budget(), "still behind a slow batch");
        admission.taken(1, now, now);
        assert!(!admission.is_over_budget(), "drained");
    }

    #[test]
    fn waiting_for_the_writers_own_cycle_is_not_queueing() {
        let admission = Admission::new(Some(BUDGET));
        admission.cycled(BUDGET * 4);
        for _ in 0..2 {
            admission.queued();
        }
        let now = Instant::now();
        admission.taken(1, now - BUDGET * 4, now);
        std::thread::sleep(INTERVAL);
        let now = Instant::now();
        admission.taken(1, now - BUDGET * 4, now);
        assert!(!admission.is_over_budget(), "a slow disk, no queue");
        admission.queued();
        admission.queued();
        admission.taken(1, now - BUDGET * 6, now);
        assert!(
            !admission.is_over_budget(),
            "two cycles behind, not for long"
        );
        std::thread::sleep(INTERVAL);
        assert!(
            admission.is_over_budget(),
            "two cycles behind for an interval"
        );
    }

    #[test]
    fn a_node_whose_fanout_is_later_than_its_budget_refuses_at_once_until_it_keeps_up() {
        use server::presence::fanout::FanoutReport;
        // No budget for the store's queue: the fan-out's is its own.
        let admission = Admission::new(None);
        let delays = FanoutDelays::default();
        admission.follow_fanout(delays.clone(), BUDGET);
        let late = |ms: u64| FanoutReport {
            delay_us: ms * 1000,
        };
        delays.report("node-1", late(15));
        assert!(!admission.is_over_budget(), "under the budget");
        delays.report("node-2", late(40));
        assert!(admission.is_over_budget(), "an idle store, a node behind");
        delays.report("node-2", late(0));
        assert!(!admission.is_over_budget(), "the node keeps up again");

        let not_following = Admission::new(Some(BUDGET));
        delays.report("node-2", late(400));
        assert!(!not_following.is_over_budget(), "fan-out not followed");
    }

    #[test]
    fn without_a_budget_everything_is_admitted() {
        let admission = Admission::new(None);
        admission.queued();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!admission.is_over_budget());
    }
}

#[cfg(test)]
mod stale_clock_tests {
    use super::*;

    #[test]
    fn one_stale_reading_does_not_refuse() {
        let admission = Admission::new(Some(Duration::from_millis(20)));
        admission.queued();
        // A submitter held off the CPU stores when the queue began waiting
        // long after the fact: the clock reads a wait longer than the budget
        // and the interval together.
        admission.waiting_since.store(0, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(150));
        assert!(!admission.is_over_budget(), "seen over once, not refused");
        let now = Instant::now();
        admission.taken(1, now, now);
        assert!(!admission.is_over_budget());
    }
}
