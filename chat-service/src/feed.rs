//! The in-process feed: every stored message handed to a consumer in the same
//! process (the all-in-one binary's streams), in id order per channel and only
//! once it is on disk, whatever the broker's state.
//!
//! It follows the publisher's rule (nothing leaves before the flush that makes
//! its id final) without the broker's round trip: the streams of the process
//! that stores a message need not hear of it through MQTT.

use bytes::Bytes;
use protocol::ChannelId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::history::{FlushTicket, History};

/// Most announcements taken per wake-up.
const BATCH: usize = 256;

/// Receives each stored message: its channel, id and JSON.
pub type Sink = Box<dyn Fn(ChannelId, u64, Bytes) + Send + 'static>;

/// A stored message and the flush that makes it final.
struct Announced {
    channel: ChannelId,
    id: u64,
    json: Bytes,
    flushed: FlushTicket,
}

/// Where stored messages are announced, in id order per channel.
#[derive(Clone)]
pub struct Feed {
    history: History,
    stored: mpsc::UnboundedSender<Announced>,
}

impl Feed {
    /// Asks for the flush at once (it joins the one the POST is about to wait
    /// for), so the message is handed over as soon as that flush is done.
    pub fn announce(&self, channel: ChannelId, id: u64, json: Bytes) {
        let flushed = self.history.request_flush();
        let announced = Announced {
            channel,
            id,
            json,
            flushed,
        };
        if self.stored.send(announced).is_err() {
            log::error!(
                "the in-process feed has stopped; {channel} #{id} reaches streams from history"
            );
        }
    }
}

/// Starts the task that hands announced messages to `sink` once they are on disk.
pub fn start(history: History, sink: Sink) -> (Feed, JoinHandle<()>) {
    let (stored, announced) = mpsc::unbounded_channel();
    (Feed { history, stored }, tokio::spawn(run(announced, sink)))
}

async fn run(mut announced: mpsc::UnboundedReceiver<Announced>, sink: Sink) {
    let mut batch = Vec::with_capacity(BATCH);
    while announced.recv_many(&mut batch, BATCH).await > 0 {
        for message in batch.drain(..) {
            if let Err(e) = message.flushed.wait().await {
                log::error!("flush before feeding streams failed: {e}");
            }
            sink(message.channel, message.id, message.json);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        let (feed, _task) = start(history.clone(), sink);
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
