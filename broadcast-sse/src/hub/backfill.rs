//! Hub-level backfills: one task per channel that reads missing ids from history
//! and hands them to the hub, which delivers them (and the live frames it held
//! meanwhile) in id order to every listener at once.
//!
//! A backfill starts when a live id skips ahead of the next expected one, or when
//! the broker acknowledged a re-subscription after a reconnect (a heal; a channel
//! with no delivery yet is first anchored at history's newest id). At most
//! [`BACKFILL_CONCURRENCY`](crate::hub::BACKFILL_CONCURRENCY) read history at a
//! time. A failing history request is retried with backoff a few times; then the
//! hub delivers what it holds and each stream's own catch-up takes over.
//!
//! The hub's side (starting backfills, and the steps a task takes under its
//! channel's lock) comes first, then the tasks.

use std::sync::Arc;
use std::time::Duration;

use protocol::{ChannelId, Message};
use tokio::sync::SemaphorePermit;

use super::{Hub, Step};
use crate::history::{HistoryError, HistorySource, PAGE};

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
        let Some(background) = &self.inner.background else {
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
            let in_progress = InProgress::new(self.clone());
            background.spawn(anchor(history.clone(), channel, epoch, in_progress));
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
        let Some(background) = &self.inner.background else {
            self.abandon_backfill(channel, epoch);
            return;
        };
        let history = self.inner.history.clone();
        let in_progress = InProgress::new(self.clone());
        crate::metrics::backfill_started();
        background.spawn(run(history, channel, epoch, in_progress));
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

/// Retries of one failing history request before the backfill gives up.
pub const RETRIES: u32 = 3;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);
/// Pages one backfill reads at most (20,000 messages). Further behind, the hub stops
/// and each stream catches up from history at its own pace, bounded per client.
pub const MAX_PAGES: usize = 100;

/// Counts a backfill as in progress from its start to the end of its task.
pub struct InProgress(Hub);

impl InProgress {
    pub fn new(hub: Hub) -> Self {
        hub.count_backfill(true);
        InProgress(hub)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.count_backfill(false);
    }
}

/// Reads a channel's missing ids page by page until the hub says it is current.
pub async fn run(
    history: Arc<dyn HistorySource>,
    channel: ChannelId,
    epoch: u64,
    in_progress: InProgress,
) {
    let hub = &in_progress.0;
    let Some(_permit) = hub.backfill_permit().await else {
        hub.abandon_backfill(channel, epoch);
        return;
    };
    for _ in 0..MAX_PAGES {
        let Some(after) = hub.backfill_position(channel, epoch) else {
            return;
        };
        match read_page(history.as_ref(), channel, after).await {
            Ok(page) => {
                if hub.apply_backfill_page(channel, epoch, &page, PAGE) == Step::Done {
                    return;
                }
            }
            Err(e) => {
                log::warn!("backfill of {channel} after {after} gave up: {e}");
                break;
            }
        }
    }
    hub.abandon_backfill(channel, epoch);
}

/// Asks history for the newest id of a channel with no delivery yet (see
/// [`Hub::anchor_undelivered`]).
pub async fn anchor(
    history: Arc<dyn HistorySource>,
    channel: ChannelId,
    epoch: u64,
    in_progress: InProgress,
) {
    let hub = &in_progress.0;
    let Some(_permit) = hub.backfill_permit().await else {
        return;
    };
    match history.latest_id(channel).await {
        Ok(newest) => hub.set_anchor(channel, epoch, newest),
        Err(e) => log::info!("{channel} starts again with its next live message: {e}"),
    }
}

/// One page, retried with doubling delays.
async fn read_page(
    history: &dyn HistorySource,
    channel: ChannelId,
    after: u64,
) -> Result<Vec<Message>, HistoryError> {
    let mut delay = FIRST_RETRY_DELAY;
    let mut attempt = 0;
    loop {
        match history.after(channel, after, PAGE).await {
            Ok(page) => return Ok(page),
            Err(e) if attempt >= RETRIES => return Err(e),
            Err(e) => {
                log::debug!("history read for {channel} failed, retrying: {e}");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
        }
    }
}
