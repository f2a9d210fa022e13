//! The hub's side of backfills: starting them (gap, heal, anchor), and the steps a
//! backfill task takes under its channel's lock. The tasks live in [`crate::backfill`].

use protocol::{ChannelId, Message};
use tokio::sync::SemaphorePermit;

use super::{Hub, Step};
use crate::backfill;

impl Hub {
    /// After the broker acknowledged a re-subscription: reads what the outage left
    /// out of each channel from history, a few channels at a time. A channel with no
    /// delivery yet heals only once [`Hub::anchor_undelivered`] gave it a position;
    /// until then its listeners start with the next live frame.
    pub fn heal(&self, channels: &[ChannelId]) {
        let to_start: Vec<(ChannelId, u64)> = channels
            .iter()
            .filter_map(|channel| {
                let mut entries = self.inner.channels.of(*channel);
                let entry = entries.get_mut(channel)?;
                entry.begin_heal().then_some((*channel, entry.epoch))
            })
            .collect();
        for (channel, epoch) in to_start {
            self.spawn_backfill(channel, epoch);
        }
    }

    /// When the broker connection drops: channels with listeners but no delivery
    /// yet ask history for their newest id, so the heal after the reconnect has a
    /// place to read from.
    pub fn anchor_undelivered(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let history = &self.inner.history;
        let undelivered: Vec<(ChannelId, u64)> = self
            .inner
            .channels
            .all()
            .flat_map(|shard| {
                shard
                    .iter()
                    .filter(|(_, entry)| entry.last_id().is_none())
                    .map(|(channel, entry)| (*channel, entry.epoch))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (channel, epoch) in undelivered {
            let in_progress = backfill::InProgress::new(self.clone());
            runtime.spawn(backfill::anchor(
                history.clone(),
                channel,
                epoch,
                in_progress,
            ));
        }
    }

    /// Records history's newest id for a channel with no delivery yet.
    pub(crate) fn set_anchor(&self, channel: ChannelId, epoch: u64, newest: Option<u64>) {
        let heal_now = {
            let mut channels = self.inner.channels.of(channel);
            channels
                .get_mut(&channel)
                .filter(|entry| entry.epoch == epoch)
                .is_some_and(|entry| entry.anchor(newest.unwrap_or(0)))
        };
        if heal_now {
            self.spawn_backfill(channel, epoch);
        }
    }

    pub(super) fn spawn_backfill(&self, channel: ChannelId, epoch: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.abandon_backfill(channel, epoch);
            return;
        };
        let history = self.inner.history.clone();
        let in_progress = backfill::InProgress::new(self.clone());
        runtime.spawn(backfill::run(history, channel, epoch, in_progress));
    }

    pub(crate) async fn backfill_permit(&self) -> Option<SemaphorePermit<'_>> {
        self.inner.permits.acquire().await.ok()
    }

    pub(crate) fn count_backfill(&self, started: bool) {
        self.inner.backfills.send_modify(|count| {
            *count = if started {
                count.saturating_add(1)
            } else {
                count.saturating_sub(1)
            };
        });
    }

    /// Where a backfill reads from, if its channel entry is still the one it began on.
    pub(crate) fn backfill_position(&self, channel: ChannelId, epoch: u64) -> Option<u64> {
        let channels = self.inner.channels.of(channel);
        let entry = channels.get(&channel).filter(|e| e.epoch == epoch)?;
        entry.is_backfilling().then(|| entry.last_id().unwrap_or(0))
    }

    /// Delivers a page a backfill read; `Done` also when the channel was left.
    pub(crate) fn apply_backfill_page(
        &self,
        channel: ChannelId,
        epoch: u64,
        page: &[Message],
        page_size: usize,
    ) -> Step {
        let mut channels = self.inner.channels.of(channel);
        match channels.get_mut(&channel).filter(|e| e.epoch == epoch) {
            Some(entry) => entry.apply_history(page, page_size),
            None => Step::Done,
        }
    }

    /// Gives up a backfill: the held frames go out as they are.
    pub(crate) fn abandon_backfill(&self, channel: ChannelId, epoch: u64) {
        let mut channels = self.inner.channels.of(channel);
        if let Some(entry) = channels.get_mut(&channel).filter(|e| e.epoch == epoch) {
            entry.finish_backfill();
        }
    }
}
