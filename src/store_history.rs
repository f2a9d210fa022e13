//! In the all-in-one process broadcast-sse reads replays and backfills straight from
//! the chat-service's store instead of over HTTP.

use broadcast_sse::replay::{HistoryError, HistoryFuture, HistorySource};
use chat_service::history::History;
use protocol::ChannelId;

pub struct StoreHistory(pub History);

impl HistorySource for StoreHistory {
    fn after(&self, channel: ChannelId, after: u64, limit: usize) -> HistoryFuture {
        let result = self
            .0
            .after(channel, after, limit)
            .map_err(|e| HistoryError(format!("history store failed: {e}")));
        Box::pin(std::future::ready(result))
    }
}
