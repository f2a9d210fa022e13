//! In the all-in-one process broadcast-sse reads replays and backfills straight from
//! the chat-service's store instead of over HTTP.

use broadcast_sse::replay::{HistoryError, HistoryFuture, HistorySource, LatestFuture};
use chat_service::history::History;
use protocol::ChannelId;

pub struct StoreHistory(pub History);

impl HistorySource for StoreHistory {
    fn after(&self, channel: ChannelId, after: u64, limit: usize) -> HistoryFuture {
        let result = self.0.after(channel, after, limit).map_err(store_failed);
        Box::pin(std::future::ready(result))
    }

    fn latest_id(&self, channel: ChannelId) -> LatestFuture {
        let result = self.0.latest(channel, 1).map_err(store_failed);
        let newest = result.map(|messages| messages.last().map(|message| message.id));
        Box::pin(std::future::ready(newest))
    }
}

fn store_failed(error: impl std::fmt::Display) -> HistoryError {
    HistoryError(format!("history store failed: {error}"))
}
