//! The in-process feed: every stored message handed to a consumer in the same
//! process (the all-in-one binary's streams), in id order per channel and only
//! once it is written to the store's file, whatever the broker's state.
//!
//! It follows the publisher's rule (nothing leaves before the write that makes
//! its id final across a restart) without the broker's round trip: the streams
//! of the process that stores a message need not hear of it through MQTT. The
//! flush thread itself hands each message over right after that write (see
//! [`crate::mqtt::Publisher::enqueue`]), so delivery costs no further hand-off
//! between threads.

use bytes::Bytes;
use protocol::ChannelId;

/// Receives each stored message: its channel, id and JSON. Runs on the flush
/// thread, so it must be quick and must not block.
pub type Sink = Box<dyn Fn(ChannelId, u64, Bytes) + Send + Sync + 'static>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::mqtt::BrokerUrl;
    use tokio::sync::mpsc;

    use super::*;
    use crate::broker_link::BrokerTarget;
    use crate::config::Limits;
    use crate::domain::NewMessage;
    use crate::history::History;

    #[tokio::test]
    async fn stored_messages_reach_the_sink_in_id_order_with_their_json_without_a_broker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let history = History::open(dir.path()).expect("open");
        // Nothing listens there: the feed must not wait for the broker.
        let broker = BrokerUrl::parse("mqtt://127.0.0.1:9", None).expect("valid");
        let (mut publisher, _task) =
            crate::mqtt::start(BrokerTarget::Network(broker), "crier", history.clone())
                .expect("start");
        let (delivered, mut received) = mpsc::unbounded_channel();
        publisher.feeding(Box::new(move |channel, id, json| {
            let _ = delivered.send((channel, id, json));
        }));
        let channel = ChannelId::from_bytes([7; 16]);
        let new = NewMessage::parse(Some("ann"), Some("hi"), &Limits::default()).expect("valid");
        for _ in 0..5 {
            history
                .append(channel, &new, None, |message, json| {
                    publisher.enqueue(channel, message.id, json.clone())
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
