//! Each channel's tail as this chat-service knows it: the next id to append,
//! behind a lock that lets one append of the channel run at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use protocol::ChannelId;
use tokio::sync::OwnedMutexGuard;

/// Channels kept before those with no append running are forgotten (their
/// next id is read from the stream again on their next append).
const MAX_KEPT: usize = 10_000;

/// The next id of a channel: `None` when it must be read from the stream (at
/// first, and after anything that leaves it in doubt).
#[derive(Debug, Default)]
pub struct Tail {
    pub next_id: Option<u64>,
}

#[derive(Default)]
pub struct Tails {
    channels: Mutex<HashMap<ChannelId, Arc<tokio::sync::Mutex<Tail>>>>,
}

impl Tails {
    /// Waits for the channel's appends before this one, then holds its tail
    /// until the guard goes.
    pub async fn lock(&self, channel: ChannelId) -> OwnedMutexGuard<Tail> {
        let tail = {
            let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
            if channels.len() >= MAX_KEPT {
                channels.retain(|_, tail| Arc::strong_count(tail) > 1);
            }
            channels.entry(channel).or_default().clone()
        };
        tail.lock_owned().await
    }

    pub fn len(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_channel_has_one_tail_and_idle_ones_are_forgotten_past_the_bound() {
        let tails = Tails::default();
        let channel = ChannelId::from_bytes(1u128.to_be_bytes());
        tails.lock(channel).await.next_id = Some(5);
        assert_eq!(tails.lock(channel).await.next_id, Some(5));
        for n in 2..=(MAX_KEPT as u128 + 1) {
            drop(tails.lock(ChannelId::from_bytes(n.to_be_bytes())).await);
        }
        assert!(tails.len() <= 2, "idle tails are dropped: {}", tails.len());
    }
}
