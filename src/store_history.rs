//! In the all-in-one process broadcast-sse reads replays and backfills straight from
//! the chat-service's store instead of over HTTP, on tokio's blocking pool (sled
//! calls never run on the async workers).

use broadcast_sse::history::{HistoryError, HistoryFuture, HistorySource, LatestFuture};
use chat_service::store::Store;
use protocol::ChannelId;

pub struct StoreHistory(pub Store);

impl HistorySource for StoreHistory {
    fn after(&self, channel: ChannelId, after: u64, limit: usize) -> HistoryFuture {
        let store = self.0.clone();
        Box::pin(read(move || store.synced().after(channel, after, limit)))
    }

    fn latest_id(&self, channel: ChannelId) -> LatestFuture {
        let store = self.0.clone();
        Box::pin(async move {
            let latest = read(move || store.synced().latest(channel, 1)).await?;
            Ok(latest.last().map(|message| message.id))
        })
    }
}

async fn read<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, sled::Error> + Send + 'static,
) -> Result<T, HistoryError> {
    match tokio::task::spawn_blocking(read).await {
        Ok(result) => result.map_err(|e| HistoryError(format!("history store failed: {e}"))),
        Err(e) => Err(HistoryError(format!("history read did not finish: {e}"))),
    }
}
