//! The in-process feed: every stored message handed to a consumer in the same
//! process (the all-in-one binary's streams), in id order per channel and only
//! once it is on disk, whatever the broker's state.
//!
//! It follows the publisher's rule (nothing leaves before the flush that makes
//! its id final) without the broker's round trip: the streams of the process
//! that stores a message need not hear of it through MQTT. The flush thread
//! itself hands each message over right after that flush, so delivery costs no
//! further hand-off between threads.

use std::sync::Arc;

use bytes::Bytes;
use protocol::ChannelId;

use crate::history::History;

/// Receives each stored message: its channel, id and JSON. Runs on the flush
/// thread, so it must be quick and must not block.
pub type Sink = Box<dyn Fn(ChannelId, u64, Bytes) + Send + Sync + 'static>;

/// Where stored messages are announced, in id order per channel.
#[derive(Clone)]
pub struct Feed {
    history: History,
    sink: Arc<Sink>,
}

impl Feed {
    pub fn new(history: History, sink: Sink) -> Self {
        Feed {
            history,
            sink: Arc::new(sink),
        }
    }

    /// Queues the message behind the flush that covers it (call right after it
    /// is stored, in id order per channel); it reaches the sink once that flush
    /// is done.
    pub fn announce(&self, channel: ChannelId, id: u64, json: Bytes) {
        let sink = Arc::clone(&self.sink);
        let queued = self.history.after_flush(Box::new(move |flushed| {
            if let Err(e) = flushed {
                log::error!("flush before feeding streams failed: {e}");
            }
            sink(channel, id, json);
        }));
        if queued.is_err() {
            log::error!(
                "the store's flush thread has stopped; {channel} #{id} reaches streams from history"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::config::Limits;
    use crate::domain::NewMessage;

    #[tokio::test]
    async fn stored_messages_reach_the_sink_in_id_order_with_their_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let history = History::open(dir.path()).expect("open");
        let (delivered, mut received) = mpsc::unbounded_channel();
        let sink: Sink = Box::new(move |channel, id, json| {
            let _ = delivered.send((channel, id, json));
        });
        let feed = Feed::new(history.clone(), sink);
        let channel = ChannelId::from_bytes([7; 16]);
        let new = NewMessage::parse(Some("ann"), Some("hi"), &Limits::default()).expect("valid");
        for _ in 0..5 {
            history
                .append(channel, &new, None, |message, json| {
                    feed.announce(channel, message.id, json.clone())
                })
                .expect("append");
        }
        for expected in 1..=5 {
            let next = tokio::time::timeout(Duration::from_secs(10), received.recv()).await;
            let (got_channel, id, json) = next.expect("in time").expect("delivered");
            assert_eq!((got_channel, id), (channel, expected));
            let message: protocol::Message = serde_json::from_slice(&json).expect("JSON");
            assert_eq!((message.id, message.text.as_str()), (expected, "hi"));
        }
    }
}
