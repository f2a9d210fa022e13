//! The publisher's connection to the broker: over the network (rumqttc), or
//! straight into the router of a broker running in this same process (rumqttd's
//! local link). The all-in-one binary uses the second: a message then reaches the
//! broker without two loopback TCP trips, the broker's network thread and
//! rumqttc's encoding, while subscribers still get it from the broker at QoS 1.
//! The publisher hands its publishes over in batches, and the router is woken
//! once per batch rather than once per message.
//!
//! Both kinds report the same events, in order, so the publisher's bookkeeping
//! (the outbox) does not care which one it talks to.

use bytes::{BufMut, Bytes, BytesMut};
use protocol::mqtt::BrokerUrl;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS};
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Packet, Publish};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// rumqttc's request queue between the client handle and the event loop.
const REQUEST_CAPACITY: usize = 1024;
/// The first byte of a QoS 1 PUBLISH (MQTT 3.1.1, 3.3.1).
const PUBLISH_QOS1: u8 = 0b0011_0010;

/// Where the publisher sends stored messages.
pub enum BrokerTarget {
    /// A broker reached over the network (`--mqtt-url`).
    Network(BrokerUrl),
    /// The broker running in this process.
    InProcess(InProcessBroker),
}

/// A link into the router of the broker running in this process.
pub struct InProcessBroker {
    tx: LinkTx,
    rx: LinkRx,
}

impl InProcessBroker {
    /// The two halves `rumqttd::Broker::link` returns.
    pub fn new(tx: LinkTx, rx: LinkRx) -> Self {
        InProcessBroker { tx, rx }
    }
}

/// What a connection reports, in the order it happens.
pub enum LinkEvent {
    /// The broker accepted the connection.
    Connected,
    /// The next publish handed over went out with this packet id.
    PacketId(u16),
    /// The broker acknowledged (PUBACK) this packet id.
    Acknowledged(u16),
    /// The broker closed the connection.
    Disconnected,
}

/// Opens connections to one broker, again and again after failures.
pub enum Connector {
    Network(Box<MqttOptions>),
    /// An in-process link is opened once; `None` once it was handed out.
    InProcess(Option<InProcessBroker>),
}

impl Connector {
    /// `in_flight`: QoS 1 publishes awaiting their PUBACK at once, over the network.
    pub fn new(target: BrokerTarget, in_flight: u16) -> Self {
        match target {
            BrokerTarget::Network(broker) => {
                let mut options = broker.options(&protocol::mqtt::client_id("chat"));
                options.set_inflight(in_flight);
                Connector::Network(Box::new(options))
            }
            BrokerTarget::InProcess(link) => Connector::InProcess(Some(link)),
        }
    }

    /// A new connection, or `None` when there is none to make: the in-process
    /// link was lost and the broker in this process cannot be reached again.
    pub fn connect(&mut self) -> Option<Connection> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (failure_tx, failure) = oneshot::channel();
        let (sender, poller) = match self {
            Connector::Network(options) => {
                let (client, eventloop) =
                    AsyncClient::new(MqttOptions::clone(options), REQUEST_CAPACITY);
                let forwarding = forward_network(eventloop, events_tx);
                let poller = tokio::spawn(forward_until_failure(forwarding, failure_tx));
                (Sender::Network(client), poller)
            }
            Connector::InProcess(link) => {
                let InProcessBroker { tx, rx } = link.take()?;
                let _ = events_tx.send(LinkEvent::Connected);
                let forwarding = forward_in_process(rx, events_tx);
                let poller = tokio::spawn(forward_until_failure(forwarding, failure_tx));
                let sender = Sender::InProcess {
                    tx,
                    last_packet_id: 0,
                    unsent: None,
                };
                (sender, poller)
            }
        };
        Some(Connection {
            sender,
            events,
            failure,
            poller,
        })
    }
}

/// One broker connection: publishes go out through it and its events come back.
pub struct Connection {
    sender: Sender,
    pub events: mpsc::UnboundedReceiver<LinkEvent>,
    failure: oneshot::Receiver<String>,
    poller: JoinHandle<()>,
}

enum Sender {
    Network(AsyncClient),
    InProcess {
        tx: LinkTx,
        last_packet_id: u16,
        /// The last publish handed over, held until [`Connection::send_held`]
        /// so that the router is told once about all those queued before it.
        unsent: Option<Publish>,
    },
}

impl Connection {
    /// Hands a QoS 1 publish over. Its packet id follows as a
    /// [`LinkEvent::PacketId`] over the network; in process it is returned at once,
    /// and the publish reaches the router with the next [`Connection::send_held`].
    pub async fn publish(&mut self, topic: String, json: Bytes) -> Result<Option<u16>, String> {
        match &mut self.sender {
            Sender::Network(client) => client
                .publish_bytes(topic, QoS::AtLeastOnce, false, json)
                .await
                .map(|()| None)
                .map_err(|e| format!("cannot publish: {e}")),
            Sender::InProcess {
                tx,
                last_packet_id,
                unsent,
            } => {
                // Packet ids run 1..=65535 (0 is not one); the publisher keeps
                // far fewer than that in flight.
                let packet_id = last_packet_id.checked_add(1).unwrap_or(1);
                *last_packet_id = packet_id;
                let publish = qos1_publish(&topic, &json, packet_id)?;
                // Queued for the router without waking it; the last one is
                // held back to wake it, once, for all of them.
                if let Some(earlier) = unsent.replace(publish) {
                    tx.buffer().push_back(Packet::Publish(earlier, None));
                }
                Ok(Some(packet_id))
            }
        }
    }

    /// Tells the router in this process about every publish handed over since
    /// the last call, in one event; over the network there is nothing to do.
    pub async fn send_held(&mut self) -> Result<(), String> {
        if let Sender::InProcess { tx, unsent, .. } = &mut self.sender
            && let Some(last) = unsent.take()
        {
            // This only waits when the router is a thousand events behind.
            tx.send(Packet::Publish(last, None))
                .await
                .map_err(|e| format!("the broker in this process is gone: {e}"))?;
        }
        Ok(())
    }

    /// Why the connection failed, when its poller saw it first, else `reason`.
    pub fn close(mut self, reason: String) -> String {
        self.poller.abort();
        self.failure.try_recv().unwrap_or(reason)
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

/// Runs a connection's event forwarding and reports why it failed, if it did.
async fn forward_until_failure(
    forwarding: impl std::future::Future<Output = Result<(), String>>,
    failure: oneshot::Sender<String>,
) {
    if let Err(reason) = forwarding.await {
        let _ = failure.send(reason);
    }
}

/// Drives one network connection's event loop, forwarding its events, until it
/// fails. It never polls again after an error: that would reconnect with this
/// client's leftover state, and the next connection starts from the store instead.
async fn forward_network(
    mut eventloop: EventLoop,
    events: mpsc::UnboundedSender<LinkEvent>,
) -> Result<(), String> {
    loop {
        let event = eventloop.poll().await.map_err(|e| e.to_string())?;
        let reported = match event {
            Event::Incoming(Incoming::ConnAck(_)) => LinkEvent::Connected,
            Event::Outgoing(Outgoing::Publish(packet_id)) => LinkEvent::PacketId(packet_id),
            Event::Incoming(Incoming::PubAck(ack)) => LinkEvent::Acknowledged(ack.pkid),
            Event::Incoming(Incoming::Disconnect) => LinkEvent::Disconnected,
            _ => continue,
        };
        if events.send(reported).is_err() {
            return Ok(());
        }
    }
}

/// Forwards the router's acknowledgements on the in-process link.
async fn forward_in_process(
    mut rx: LinkRx,
    events: mpsc::UnboundedSender<LinkEvent>,
) -> Result<(), String> {
    let gone = |e| format!("the broker in this process is gone: {e}");
    loop {
        let Some(notification) = rx.next().await.map_err(gone)? else {
            continue;
        };
        let packet: Option<Packet> = notification.into();
        let reported = match packet {
            Some(Packet::PubAck(ack, _)) => LinkEvent::Acknowledged(ack.pkid),
            Some(Packet::Disconnect(..)) => LinkEvent::Disconnected,
            Some(_) => continue,
            // The router paused this link; it resumes once told the link is ready.
            None => {
                rx.wake().await.map_err(gone)?;
                continue;
            }
        };
        if events.send(reported).is_err() {
            return Ok(());
        }
    }
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
