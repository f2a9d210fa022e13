//! The last id given out in every channel, split over a few locks by channel.
//!
//! An append holds its channel's lock from choosing the id until the message is
//! stored and queued, so that each channel's ids are stored and announced in
//! order. One lock for every channel made the HTTP workers wait for each other's
//! store inserts even on different channels; with the channels spread over
//! shards, two appends wait for each other only when their channels share one.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use protocol::ChannelId;

/// Far more shards than HTTP workers, so that two busy channels rarely share one.
const SHARDS: usize = 32;

pub struct LastIds {
    shards: Vec<Mutex<HashMap<ChannelId, u64>>>,
}

impl LastIds {
    pub fn new(last_ids: HashMap<ChannelId, u64>) -> Self {
        let mut shards: Vec<HashMap<ChannelId, u64>> = vec![HashMap::new(); SHARDS];
        for (channel, id) in last_ids {
            shards[shard_of(channel)].insert(channel, id);
        }
        LastIds {
            shards: shards.into_iter().map(Mutex::new).collect(),
        }
    }

    /// The lock that numbers `channel`, held by one append at a time.
    pub fn lock(&self, channel: ChannelId) -> MutexGuard<'_, HashMap<ChannelId, u64>> {
        lock_shard(&self.shards[shard_of(channel)])
    }

    /// The last id of every channel.
    pub fn snapshot(&self) -> HashMap<ChannelId, u64> {
        let mut all = HashMap::new();
        for shard in &self.shards {
            let shard = lock_shard(shard);
            all.extend(shard.iter().map(|(channel, id)| (*channel, *id)));
        }
        all
    }
}

/// A panic while holding a shard cannot leave its map inconsistent (an id is
/// written after the store succeeds), so a poisoned shard is still usable.
fn lock_shard(shard: &Mutex<HashMap<ChannelId, u64>>) -> MutexGuard<'_, HashMap<ChannelId, u64>> {
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

    fn channel(n: u128) -> ChannelId {
        ChannelId::from_bytes(n.to_be_bytes())
    }

    #[test]
    fn a_snapshot_holds_every_channel_given_and_numbered() {
        let ids = LastIds::new(HashMap::from([(channel(1), 4), (channel(2), 9)]));
        ids.lock(channel(3)).insert(channel(3), 1);
        let expected = HashMap::from([(channel(1), 4), (channel(2), 9), (channel(3), 1)]);
        assert_eq!(ids.snapshot(), expected);
    }

    #[test]
    fn numbering_one_channel_holds_up_few_others() {
        let ids = LastIds::new(HashMap::new());
        let _held = ids.lock(channel(0));
        let free = (1..=64)
            .filter(|n| ids.shards[shard_of(channel(*n))].try_lock().is_ok())
            .count();
        assert!(free >= 56, "only {free} of 64 channels could be numbered");
    }
}
