//! In the all-in-one process broadcast-sse reads replays and backfills straight from
//! the chat-service's store instead of over HTTP, on the process's one blocking
//! pool (sled calls never run on the async workers or the stream threads).

use broadcast_sse::history::{HistoryError, HistoryFuture, HistorySource, LatestFuture};
use chat_service::store::Store;
use protocol::ChannelId;
use server::tasks::Background;

pub struct StoreHistory {
    pub store: Store,
    /// Runs the reads.
    pub background: Background,
}

impl HistorySource for StoreHistory {
    fn after(&self, channel: ChannelId, after: u64, limit: usize) -> HistoryFuture {
        let store = self.store.clone();
        Box::pin(read(&self.background, move || {
            store.synced().after(channel, after, limit)
        }))
    }

    fn latest_id(&self, channel: ChannelId) -> LatestFuture {
        let store = self.store.clone();
        let reading = read(&self.background, move || store.synced().latest(channel, 1));
        Box::pin(async move {
            let latest = reading.await?;
            Ok(latest.last().map(|message| message.id))
        })
    }
}

/// Starts `read` at once; the future gives its result.
fn read<T, F>(
    background: &Background,
    read: F,
) -> impl Future<Output = Result<T, HistoryError>> + use<T, F>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, sled::Error> + Send + 'static,
{
    let reading = background.blocking(read);
    async move {
        match reading.await {
            Ok(result) => result.map_err(|e| HistoryError(format!("history store failed: {e}"))),
            Err(e) => Err(HistoryError(format!("history read did not finish: {e}"))),
        }
    }
}
