//! The hub's channels, spread over a few locks by channel id, so that delivering
//! to one channel never waits for work on another (a busy room's fan-out, a
//! backfill page) and the HTTP workers joining and leaving channels rarely meet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use protocol::ChannelId;

use super::channel::ChannelEntry;

/// Far more shards than threads, so two busy channels rarely share one.
const SHARDS: usize = 32;

pub type Shard = HashMap<ChannelId, ChannelEntry>;

pub struct Shards {
    /// std mutexes: each held for map lookups and non-blocking ring writes,
    /// never across an `.await`.
    shards: Vec<Mutex<Shard>>,
    /// Channels in all shards.
    count: AtomicUsize,
}

impl Shards {
    pub fn new() -> Self {
        Shards {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            count: AtomicUsize::new(0),
        }
    }

    /// The shard that holds `channel`.
    pub fn of(&self, channel: ChannelId) -> MutexGuard<'_, Shard> {
        lock(&self.shards[shard_of(channel)])
    }

    /// Every shard, one after the other (for what concerns all channels).
    pub fn all(&self) -> impl Iterator<Item = MutexGuard<'_, Shard>> {
        self.shards.iter().map(lock)
    }

    /// Channels followed, counted as they are added and removed.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn added(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn removed(&self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Entries are updated field by field with no invariant spanning a panic, so a
/// poisoned shard is still usable.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Mixes all 16 bytes, since channel ids may differ only in their last ones.
fn shard_of(channel: ChannelId) -> usize {
    let bits = u128::from_be_bytes(*channel.as_bytes());
    let folded = (bits as u64) ^ ((bits >> 64) as u64);
    let mixed = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 32) as usize % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holding_one_channel_holds_up_few_others() {
        let shards = Shards::new();
        let channel = |n: u128| ChannelId::from_bytes(n.to_be_bytes());
        let _held = shards.of(channel(0));
        let free = (1..=64)
            .filter(|n| shards.shards[shard_of(channel(*n))].try_lock().is_ok())
            .count();
        assert!(free >= 56, "only {free} of 64 channels could be reached");
    }
}
