//! The publisher's connection to the broker. Over the network it is a fresh
//! rumqttc client per connection; a process that runs the broker itself (the
//! all-in-one binary) may bring a link of its own ([`Link`]) straight into the
//! broker's router.
//!
//! Every kind reports the same events, in order, so the publisher's bookkeeping
//! (the outbox) does not care which one it talks to.

use std::future::Future;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS};
use server::mqtt::BrokerUrl;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// rumqttc's request queue between the client handle and the event loop.
const REQUEST_CAPACITY: usize = 1024;

/// Where the publisher sends stored messages.
pub enum BrokerTarget {
    /// A broker reached over the network (`--mqtt-url`).
    Network(BrokerUrl),
    /// A link the caller provides (a broker in the same process).
    Link(Box<dyn Link>),
}

/// Opens connections to a broker by some other means than the network.
pub trait Link: Send {
    /// A new connection, or `None` when there is none to make any more.
    fn connect(&mut self) -> Option<Connection>;
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

/// Hands publishes to the broker on one connection.
pub trait Publishes: Send {
    /// Hands a QoS 1 publish over; its packet id when known at once (else it
    /// follows as a [`LinkEvent::PacketId`]).
    fn publish(&mut self, topic: String, json: Bytes)
    -> BoxFuture<'_, Result<Option<u16>, String>>;

    /// Sends whatever [`Publishes::publish`] held back to send in one go.
    fn send_held(&mut self) -> BoxFuture<'_, Result<(), String>>;
}

/// Opens connections to one broker, again and again after failures.
pub enum Connector {
    Network(Box<MqttOptions>),
    Link(Box<dyn Link>),
}

impl Connector {
    /// `in_flight`: QoS 1 publishes awaiting their PUBACK at once, over the network.
    pub fn new(target: BrokerTarget, in_flight: u16) -> Self {
        match target {
            BrokerTarget::Network(broker) => {
                let mut options = broker.options(&server::mqtt::client_id("chat"));
                options.set_inflight(in_flight);
                Connector::Network(Box::new(options))
            }
            BrokerTarget::Link(link) => Connector::Link(link),
        }
    }

    /// A new connection, or `None` when there is none to make.
    pub fn connect(&mut self) -> Option<Connection> {
        match self {
            Connector::Network(options) => {
                let (client, eventloop) =
                    AsyncClient::new(MqttOptions::clone(options), REQUEST_CAPACITY);
                let sender = NetworkPublisher(client);
                Some(Connection::start(sender, |events| {
                    forward_network(eventloop, events)
                }))
            }
            Connector::Link(link) => link.connect(),
        }
    }
}

/// One broker connection: publishes go out through it and its events come back.
pub struct Connection {
    sender: Box<dyn Publishes>,
    pub events: mpsc::UnboundedReceiver<LinkEvent>,
    failure: oneshot::Receiver<String>,
    poller: JoinHandle<()>,
}

impl Connection {
    /// A connection that publishes through `sender` while a task runs `forward`,
    /// which reports the connection's events until it fails (its error is why).
    pub fn start<F, Fut>(sender: impl Publishes + 'static, forward: F) -> Connection
    where
        F: FnOnce(mpsc::UnboundedSender<LinkEvent>) -> Fut,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (failure_tx, failure) = oneshot::channel();
        let forwarding = forward(events_tx);
        let poller = tokio::spawn(async move {
            if let Err(reason) = forwarding.await {
                let _ = failure_tx.send(reason);
            }
        });
        Connection {
            sender: Box::new(sender),
            events,
            failure,
            poller,
        }
    }

    /// Hands a QoS 1 publish over (see [`Publishes::publish`]).
    pub async fn publish(&mut self, topic: String, json: Bytes) -> Result<Option<u16>, String> {
        self.sender.publish(topic, json).await
    }

    /// Sends what the link held back (see [`Publishes::send_held`]).
    pub async fn send_held(&mut self) -> Result<(), String> {
        self.sender.send_held().await
    }

    /// Why the connection failed, when its poller saw it first, else `reason`.
    pub fn close(mut self, reason: String) -> String {
        self.poller.abort();
        self.failure.try_recv().unwrap_or(reason)
    }
}

/// A connection's poller ends with it, also when the publisher is dropped at a
/// stop without closing it.
impl Drop for Connection {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// A rumqttc client: publishes are queued to its event loop, which reports
/// their packet ids as it writes them.
struct NetworkPublisher(AsyncClient);

impl Publishes for NetworkPublisher {
    fn publish(
        &mut self,
        topic: String,
        json: Bytes,
    ) -> BoxFuture<'_, Result<Option<u16>, String>> {
        Box::pin(async move {
            self.0
                .publish_bytes(topic, QoS::AtLeastOnce, false, json)
                .await
                .map(|()| None)
                .map_err(|e| format!("cannot publish: {e}"))
        })
    }

    fn send_held(&mut self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(std::future::ready(Ok(())))
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
