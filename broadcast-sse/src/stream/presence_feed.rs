//! `?presence=1`: who is in each of a stream's channels, told as they join
//! and leave (`event: presence`).

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use protocol::ChannelId;
use tokio::sync::watch;

use super::ClientStream;
use crate::presence::Joined;

pub(super) struct PresenceFeed {
    pub(super) channel: ChannelId,
    pub(super) names: watch::Receiver<Arc<BTreeSet<String>>>,
    pub(super) told: Arc<BTreeSet<String>>,
}

impl ClientStream {
    /// Counts the stream in its channels' presence while it is open (`joined`,
    /// one per channel in order) and, with `names` (one per channel), tells it
    /// who is there now and then who joins and leaves (`event: presence`).
    pub fn present(
        mut self,
        joined: Vec<Joined>,
        names: Option<Vec<watch::Receiver<Arc<BTreeSet<String>>>>>,
    ) -> Self {
        for (follow, joined) in self.follows.all_mut().iter_mut().zip(joined) {
            follow._joined = Some(joined);
        }
        if let Some(names) = names {
            let channels = self.follows.all().iter().map(|follow| follow.channel);
            let feeds = channels.zip(names).map(|(channel, names)| PresenceFeed {
                channel,
                names,
                told: Arc::new(BTreeSet::new()),
            });
            self.presence = Some(feeds.collect());
            self.tell_presence();
        }
        self
    }

    /// Sends, per channel, the names that joined and left since the last
    /// presence event.
    pub(super) fn tell_presence(&mut self) {
        let Some(feeds) = &mut self.presence else {
            return;
        };
        let mut events = Vec::new();
        for feed in feeds.iter_mut() {
            let now = feed.names.borrow_and_update().clone();
            let joined: Vec<&String> = now.difference(&feed.told).collect();
            let left: Vec<&String> = feed.told.difference(&now).collect();
            if joined.is_empty() && left.is_empty() && !feed.told.is_empty() {
                continue;
            }
            let data = serde_json::json!({
                "channel": feed.channel, "joined": joined, "left": left,
            });
            events.push(Bytes::from(format!("event: presence\ndata: {data}\n\n")));
            feed.told = now;
        }
        events.into_iter().for_each(|event| self.push(event));
    }
}

/// Waits until a channel's names change, or forever for a stream that does
/// not follow presence (or once the watcher is gone).
pub(super) async fn presence_changed(feeds: &mut Option<Box<[PresenceFeed]>>) {
    let Some(feeds) = feeds else {
        return std::future::pending().await;
    };
    let changes = feeds.iter_mut().map(|feed| Box::pin(feed.names.changed()));
    let (changed, _, _) = futures_util::future::select_all(changes).await;
    if changed.is_err() {
        std::future::pending::<()>().await;
    }
}
