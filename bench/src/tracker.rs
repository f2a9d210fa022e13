//! Per-subscriber accounting of sequence numbers in a few dozen bytes: the
//! next expected number plus the ranges skipped so far. A number below the
//! next one is either a skipped one arriving late or a duplicate; whatever is
//! never seen is lost.
//!
//! A late arrival is only out of order if it was acknowledged before a message
//! delivered ahead of it was sent: messages published concurrently may be
//! ordered either way by the server (counted as `reordered_concurrent`).

/// Skipped ranges kept per subscriber; past this the oldest are forgotten
/// (they stay lost, and a very late arrival of one counts as a duplicate).
const MAX_GAPS: usize = 1024;

#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// Every number below this was seen or is in `gaps`.
    next: u64,
    /// Half-open ranges `[from, to)` below `next` not seen yet.
    gaps: Vec<(u64, u64)>,
    /// Distinct numbers seen.
    pub distinct: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub reordered_concurrent: u64,
    /// Highest `acked` of the messages seen: all up to it must come first.
    ordered_upto: u64,
}

impl SeqTracker {
    /// Records one delivery of `seq` (numbers start at 1), sent once every
    /// message up to `acked` had been acknowledged.
    pub fn record(&mut self, seq: u64, acked: u64) {
        let ordered_upto = self.ordered_upto;
        self.ordered_upto = self.ordered_upto.max(acked.min(seq.saturating_sub(1)));
        let next = self.next.max(1);
        if seq >= next {
            if seq > next {
                if self.gaps.len() == MAX_GAPS {
                    self.gaps.remove(0);
                }
                self.gaps.push((next, seq));
            }
            self.next = seq + 1;
            self.distinct += 1;
            return;
        }
        match self
            .gaps
            .iter()
            .position(|&(from, to)| from <= seq && seq < to)
        {
            Some(i) => {
                let (from, to) = self.gaps[i];
                match (from == seq, seq + 1 == to) {
                    (true, true) => {
                        self.gaps.remove(i);
                    }
                    (true, false) => self.gaps[i].0 = seq + 1,
                    (false, true) => self.gaps[i].1 = seq,
                    (false, false) => {
                        self.gaps[i].1 = seq;
                        self.gaps.insert(i + 1, (seq + 1, to));
                    }
                }
                self.distinct += 1;
                if seq <= ordered_upto {
                    self.out_of_order += 1;
                } else {
                    self.reordered_concurrent += 1;
                }
            }
            None => self.duplicated += 1,
        }
    }

    /// Messages of the first `expected` never seen.
    pub fn lost(&self, expected: u64) -> u64 {
        let seen_below = self.next.max(1).min(expected + 1) - 1;
        let skipped: u64 = self
            .gaps
            .iter()
            .map(|&(from, to)| to.min(expected + 1).saturating_sub(from))
            .sum();
        expected - seen_below + skipped
    }

    /// Every one of the first `expected` messages was seen.
    pub fn complete(&self, expected: u64) -> bool {
        self.lost(expected) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tracks messages each sent after all before it were acknowledged.
    fn track(seqs: &[u64]) -> SeqTracker {
        let mut t = SeqTracker::default();
        for &s in seqs {
            t.record(s, s - 1);
        }
        t
    }

    #[test]
    fn in_order_stream_is_complete() {
        let t = track(&[1, 2, 3]);
        assert_eq!((t.lost(3), t.duplicated, t.out_of_order), (0, 0, 0));
        assert_eq!(t.lost(5), 2, "two more were published than seen");
    }

    #[test]
    fn late_arrival_fills_its_gap_and_counts_as_out_of_order() {
        let t = track(&[1, 4, 2, 6, 3]);
        assert_eq!((t.lost(6), t.out_of_order, t.duplicated), (1, 2, 0));
        assert_eq!(t.distinct, 5);
    }

    #[test]
    fn concurrent_publishes_may_arrive_either_way() {
        let mut t = SeqTracker::default();
        // 2 and 3 were in flight together; 4 was sent after both were acknowledged.
        for (seq, acked) in [(1, 0), (3, 1), (2, 1), (4, 3)] {
            t.record(seq, acked);
        }
        assert_eq!(
            (t.lost(4), t.out_of_order, t.reordered_concurrent),
            (0, 0, 1)
        );
        let mut t = SeqTracker::default();
        for (seq, acked) in [(1, 0), (4, 3), (2, 1), (3, 1)] {
            t.record(seq, acked);
        }
        assert_eq!(
            (t.lost(4), t.out_of_order, t.reordered_concurrent),
            (0, 2, 0)
        );
    }

    #[test]
    fn repeats_count_as_duplicates() {
        let t = track(&[1, 2, 2, 3, 1, 5, 5]);
        assert_eq!((t.lost(5), t.duplicated, t.out_of_order), (1, 3, 0));
    }

    #[test]
    fn nothing_seen_loses_everything() {
        assert_eq!(track(&[]).lost(4), 4);
        assert!(track(&[]).complete(0));
    }
}
