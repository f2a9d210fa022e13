//! The publisher's link into the embedded broker's router (rumqttd's local
//! link): a message reaches the broker without two loopback TCP trips, the
//! broker's network thread and rumqttc's encoding, while subscribers still get
//! it from the broker at QoS 1. The publisher hands its publishes over in
//! batches, and the router is woken once per batch rather than once per message.
//! Signals go in at QoS 0, each with a wake-up of its own.

use bytes::{BufMut, Bytes, BytesMut};
use chat_service::publish::link::{Connection, Link, LinkEvent, Publishes};
use futures_util::future::BoxFuture;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Packet, Publish};
use tokio::sync::mpsc;

/// The first byte of a QoS 1 PUBLISH (MQTT 3.1.1, 3.3.1).
const PUBLISH_QOS1: u8 = 0b0011_0010;

/// A link into the router of the broker running in this process. It is opened
/// once: rumqttd cannot give another while its broker runs.
pub struct InProcessBroker {
    halves: Option<(LinkTx, LinkRx)>,
}

impl InProcessBroker {
    /// The two halves `rumqttd::Broker::link` returns.
    pub fn new(tx: LinkTx, rx: LinkRx) -> Self {
        InProcessBroker {
            halves: Some((tx, rx)),
        }
    }
}

impl Link for InProcessBroker {
    fn connect(&mut self) -> Option<Connection> {
        let (tx, rx) = self.halves.take()?;
        let sender = InProcessPublisher {
            tx,
            last_packet_id: 0,
            unsent: None,
        };
        Some(Connection::start(sender, |events| {
            forward_in_process(rx, events)
        }))
    }
}

struct InProcessPublisher {
    tx: LinkTx,
    last_packet_id: u16,
    /// The last publish handed over, held until `send_held` so that the router
    /// is told once about all those queued before it.
    unsent: Option<Publish>,
}

impl Publishes for InProcessPublisher {
    /// The packet id is known at once; the publish reaches the router with the
    /// next `send_held`.
    fn publish(
        &mut self,
        topic: String,
        json: Bytes,
    ) -> BoxFuture<'_, Result<Option<u16>, String>> {
        // Packet ids run 1..=65535 (0 is not one); the publisher keeps far fewer
        // than that in flight.
        let packet_id = self.last_packet_id.checked_add(1).unwrap_or(1);
        self.last_packet_id = packet_id;
        let queued = qos1_publish(&topic, &json, packet_id).map(|publish| {
            // Queued for the router without waking it; the last one is held
            // back to wake it, once, for all of them.
            if let Some(earlier) = self.unsent.replace(publish) {
                self.tx.buffer().push_back(Packet::Publish(earlier, None));
            }
            Some(packet_id)
        });
        Box::pin(std::future::ready(queued))
    }

    /// Queues a QoS 0 publish (what rumqttd's local links send anyway) after
    /// those held back, and tells the router about all of them at once.
    fn publish_signal(&mut self, topic: String, json: Bytes) -> BoxFuture<'_, Result<(), String>> {
        let signal = Publish::new(Bytes::from(topic), json, false);
        if let Some(earlier) = self.unsent.replace(signal) {
            self.tx.buffer().push_back(Packet::Publish(earlier, None));
        }
        self.send_held()
    }

    /// Tells the router about every publish handed over since the last call, in
    /// one event.
    fn send_held(&mut self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if let Some(last) = self.unsent.take() {
                // This only waits when the router is a thousand events behind.
                self.tx
                    .send(Packet::Publish(last, None))
                    .await
                    .map_err(|e| format!("the broker in this process is gone: {e}"))?;
            }
            Ok(())
        })
    }
}

/// A QoS 1 PUBLISH for the router. rumqttd only builds QoS 0 ones for local
/// links, but reads any from its own plain encoding: first byte, packet id,
/// topic length, topic, payload.
fn qos1_publish(topic: &str, payload: &[u8], packet_id: u16) -> Result<Publish, String> {
    let topic_length =
        u16::try_from(topic.len()).map_err(|_| format!("topic too long: {} bytes", topic.len()))?;
    let mut raw = BytesMut::with_capacity(5 + topic.len() + payload.len());
    raw.put_u8(PUBLISH_QOS1);
    raw.put_u16(packet_id);
    raw.put_u16(topic_length);
    raw.put_slice(topic.as_bytes());
    raw.put_slice(payload);
    Ok(Publish::deserialize(raw.freeze()))
}

/// Says the link is up, then forwards the router's acknowledgements on it.
async fn forward_in_process(mut rx: LinkRx, events: mpsc::Sender<LinkEvent>) -> Result<(), String> {
    if events.send(LinkEvent::Connected).await.is_err() {
        return Ok(());
    }
    loop {
        let reported = match next_packet(&mut rx).await? {
            Packet::PubAck(ack, _) => LinkEvent::Acknowledged(ack.pkid),
            Packet::Disconnect(..) => LinkEvent::Lost("the broker disconnected".into()),
            _ => continue,
        };
        if events.send(reported).await.is_err() {
            return Ok(());
        }
    }
}

/// The next packet the router sends a link (of either side), waking the
/// router again whenever it paused the link because it had not taken what
/// it was given.
pub(crate) async fn next_packet(rx: &mut LinkRx) -> Result<Packet, String> {
    loop {
        let Some(notification) = rx.next().await.map_err(gone)? else {
            continue;
        };
        let packet: Option<Packet> = notification.into();
        match packet {
            Some(packet) => return Ok(packet),
            // The router paused this link; it resumes once told the link is ready.
            None => rx.wake().await.map_err(gone)?,
        }
    }
}

pub(crate) fn gone(e: rumqttd::local::LinkError) -> String {
    format!("the broker in this process is gone: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_in_process_publish_is_qos_1_with_its_packet_id_topic_and_payload() {
        let publish = qos1_publish("crier/channels/c/messages", b"{\"id\":1}", 513).expect("fits");
        assert_eq!(publish.topic.as_ref(), b"crier/channels/c/messages");
        assert_eq!(publish.payload.as_ref(), b"{\"id\":1}");
        // rumqttd's own encoding: first byte (QoS in bits 1-2), then the packet id.
        let encoded = publish.serialize();
        assert_eq!(encoded[0], PUBLISH_QOS1);
        assert_eq!(u16::from_be_bytes([encoded[1], encoded[2]]), 513);
    }

    #[test]
    fn a_topic_longer_than_mqtt_allows_is_refused() {
        let topic = "t".repeat(usize::from(u16::MAX) + 1);
        assert!(qos1_publish(&topic, b"{}", 1).is_err());
    }
}
