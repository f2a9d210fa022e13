//! Hub-level backfills: one task per channel that reads missing ids from history
//! and hands them to the hub, which delivers them (and the live frames it held
//! meanwhile) in id order to every listener at once.
//!
//! A backfill starts when a live id skips ahead of the next expected one, or when
//! the broker acknowledged a re-subscription after a reconnect. At most
//! [`BACKFILL_CONCURRENCY`](crate::hub::BACKFILL_CONCURRENCY) read history at a
//! time. A failing history request is retried with backoff a few times; then the
//! hub delivers what it holds and each stream's own catch-up takes over.

use std::sync::Arc;
use std::time::Duration;

use protocol::{ChannelId, Message};

use crate::hub::{Hub, Step};
use crate::replay::{HistoryError, HistorySource, PAGE};

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
