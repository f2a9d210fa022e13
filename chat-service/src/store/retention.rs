//! Retention: removes each channel's oldest messages beyond a count or an age.
//!
//! The trimmed watermark is written before the messages go, so after a crash
//! mid-trim the numbering still continues past every id ever given out, and a
//! reader resuming before the watermark learns those ids are gone.

use std::time::Duration;

use protocol::{ChannelId, Message};

use super::changes::{Change, TRIM_BATCH};
use super::keys::{id_of_key, message_key};
use super::{Store, StoreError};

/// How long retention waits when the writer's queue is full.
const BUSY_PAUSE: Duration = Duration::from_millis(50);

/// What to keep. `None` keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub max_per_channel: Option<u64>,
    pub max_age: Option<Duration>,
}

impl RetentionPolicy {
    pub fn keeps_everything(&self) -> bool {
        self.max_per_channel.is_none() && self.max_age.is_none()
    }
}

impl Store {
    /// One pass over every channel; returns how many messages were removed.
    /// Finding what to remove reads the store on the blocking pool; the
    /// removals are the writer's, a bounded batch per request.
    pub async fn trim(&self, policy: &RetentionPolicy) -> Result<u64, StoreError> {
        let store = self.clone();
        let policy = *policy;
        let plan = tokio::task::spawn_blocking(move || store.trim_plan(&policy))
            .await
            .map_err(|_| StoreError::Stopped)?
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        let mut removed = 0;
        for (channel, through) in plan {
            loop {
                let batch = match self.change(Change::Trim { channel, through }).await {
                    Err(StoreError::Busy) => {
                        // Appends come first; retention waits for room.
                        tokio::time::sleep(BUSY_PAUSE).await;
                        continue;
                    }
                    batch => batch?,
                };
                removed += batch;
                if batch < TRIM_BATCH as u64 {
                    break;
                }
            }
        }
        Ok(removed)
    }

    /// Per channel with something to remove, the id up to which to remove.
    fn trim_plan(&self, policy: &RetentionPolicy) -> Result<Vec<(ChannelId, u64)>, sled::Error> {
        let cutoff = policy.max_age.map(Message::timestamp_before);
        let mut plan = Vec::new();
        for (channel, last) in self.last_ids()? {
            let trimmed = self.trimmed_through(channel)?;
            let mut through = trimmed;
            if let Some(keep) = policy.max_per_channel {
                through = through.max(last.saturating_sub(keep));
            }
            if let Some(cutoff) = &cutoff {
                through = through.max(self.newest_older_than(channel, through, cutoff)?);
            }
            if through > trimmed {
                plan.push((channel, through));
            }
        }
        Ok(plan)
    }

    /// The id of the newest message stored before `cutoff` (timestamps compare as
    /// strings), looking from `after` on; `after` when there is none.
    fn newest_older_than(
        &self,
        channel: ChannelId,
        after: u64,
        cutoff: &str,
    ) -> Result<u64, sled::Error> {
        let mut newest = after;
        let start = message_key(channel, after.saturating_add(1));
        for entry in self
            .inner
            .trees
            .messages
            .range(start..=message_key(channel, u64::MAX))
        {
            let (key, value) = entry?;
            match super::decode(&value) {
                Some(message) if message.ts.as_str() >= cutoff => break,
                _ => newest = id_of_key(&key),
            }
        }
        Ok(newest)
    }
}

/// Trims in the background every `interval` until the process ends.
pub async fn run(store: Store, policy: RetentionPolicy, interval: Duration) {
    if policy.keeps_everything() {
        return;
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match store.trim(&policy).await {
            Ok(0) => {}
            Ok(removed) => log::debug!("retention removed {removed} messages"),
            Err(e) => log::error!("retention pass failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{append, ids, open};

    fn channel(n: u8) -> ChannelId {
        ChannelId::from_bytes([n; 16])
    }

    #[tokio::test]
    async fn trimming_by_count_keeps_the_newest_and_records_the_watermark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _announcements) = open(dir.path());
        append(&store, channel(1), 25, None).await;
        append(&store, channel(2), 5, None).await;
        let policy = RetentionPolicy {
            max_per_channel: Some(10),
            max_age: None,
        };
        assert_eq!(store.trim(&policy).await.expect("trim"), 15);
        assert_eq!(ids(&store, channel(1)), (16..=25).collect::<Vec<_>>());
        assert_eq!(ids(&store, channel(2)), (1..=5).collect::<Vec<_>>());
        assert_eq!(store.trimmed_through(channel(1)).expect("trimmed"), 15);
        assert_eq!(store.trim(&policy).await.expect("trim again"), 0);
    }

    #[tokio::test]
    async fn trimming_by_age_may_empty_a_channel_but_numbering_continues_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (store, _announcements) = open(dir.path());
            append(&store, channel(1), 1, Some("k")).await;
            append(&store, channel(1), 4, None).await;
            let policy = RetentionPolicy {
                max_per_channel: None,
                max_age: Some(Duration::ZERO),
            };
            // Every message is older than "now" once a millisecond has passed.
            std::thread::sleep(Duration::from_millis(2));
            assert_eq!(store.trim(&policy).await.expect("trim"), 5);
            assert!(ids(&store, channel(1)).is_empty());
        }
        let (store, _announcements) = open(dir.path());
        append(&store, channel(1), 1, Some("k")).await;
        assert_eq!(
            ids(&store, channel(1)),
            [6],
            "ids continue after trimmed ones, and a trimmed idempotency key is forgotten"
        );
    }

    #[tokio::test]
    async fn trimming_by_age_keeps_messages_newer_than_the_cutoff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _announcements) = open(dir.path());
        append(&store, channel(1), 4, None).await;
        let policy = RetentionPolicy {
            max_per_channel: None,
            max_age: Some(Duration::from_secs(3600)),
        };
        assert_eq!(store.trim(&policy).await.expect("trim"), 0);
        assert_eq!(ids(&store, channel(1)), [1, 2, 3, 4]);
    }
}
