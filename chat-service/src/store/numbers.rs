//! The last id given out in each busy channel, owned by the writer thread (so no
//! lock). A channel is loaded from the store on its first append and dropped
//! once it has been idle for a while, so memory follows the channels in use, not
//! every channel ever written.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use protocol::ChannelId;

struct Number {
    last_id: u64,
    used: Instant,
}

pub struct Numbers {
    channels: HashMap<ChannelId, Number>,
    idle_after: Duration,
    last_sweep: Instant,
}

impl Numbers {
    pub fn new(idle_after: Duration) -> Self {
        Numbers {
            channels: HashMap::new(),
            idle_after,
            last_sweep: Instant::now(),
        }
    }

    /// Gives out the channel's next id, loading its last one with `load` when the
    /// channel is not in memory.
    pub fn next_id<E>(
        &mut self,
        channel: ChannelId,
        now: Instant,
        load: impl FnOnce() -> Result<u64, E>,
    ) -> Result<u64, E> {
        let number = match self.channels.get_mut(&channel) {
            Some(number) => number,
            None => self.channels.entry(channel).or_insert(Number {
                last_id: load()?,
                used: now,
            }),
        };
        number.last_id += 1;
        number.used = now;
        Ok(number.last_id)
    }

    /// Drops what the channels hold, so their next append reads the store again
    /// (after a write that failed, the store is the truth).
    pub fn forget(&mut self, channels: impl IntoIterator<Item = ChannelId>) {
        for channel in channels {
            self.channels.remove(&channel);
        }
    }

    /// Drops channels idle for longer than the limit; looks at most once per
    /// limit (or per second), so the cost is spread over many appends.
    pub fn sweep(&mut self, now: Instant) {
        let every = self.idle_after.max(Duration::from_secs(1));
        if now.duration_since(self.last_sweep) < every && !self.idle_after.is_zero() {
            return;
        }
        self.last_sweep = now;
        let idle_after = self.idle_after;
        self.channels
            .retain(|_, number| now.duration_since(number.used) < idle_after);
    }

    /// Channels held in memory.
    pub fn len(&self) -> usize {
        self.channels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(n: u8) -> ChannelId {
        ChannelId::from_bytes([n; 16])
    }

    #[test]
    fn a_channel_is_loaded_once_then_counted_in_memory() {
        let mut numbers = Numbers::new(Duration::from_secs(60));
        let now = Instant::now();
        let mut loads = 0;
        for expected in 8..=10 {
            let id = numbers.next_id(channel(1), now, || {
                loads += 1;
                Ok::<_, ()>(7)
            });
            assert_eq!(id, Ok(expected));
        }
        assert_eq!(loads, 1);
    }

    #[test]
    fn idle_channels_are_dropped_and_busy_ones_kept() {
        let mut numbers = Numbers::new(Duration::from_secs(60));
        let start = Instant::now();
        numbers.next_id(channel(1), start, || Ok::<_, ()>(0)).ok();
        let later = start + Duration::from_secs(61);
        numbers.next_id(channel(2), later, || Ok::<_, ()>(0)).ok();
        numbers.sweep(later);
        assert_eq!(numbers.len(), 1);
        assert!(numbers.channels.contains_key(&channel(2)));
    }

    #[test]
    fn a_failed_load_gives_out_no_id_and_keeps_nothing() {
        let mut numbers = Numbers::new(Duration::from_secs(60));
        let id = numbers.next_id(channel(1), Instant::now(), || Err("disk"));
        assert_eq!(id, Err("disk"));
        assert_eq!(numbers.len(), 0);
    }
}
