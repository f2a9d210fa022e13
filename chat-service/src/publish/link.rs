//! The publisher's connection to the broker. Over the network it is the one
//! connection module every client uses ([`server::mqtt::connection`]), with a
//! fresh session: the module keeps reconnecting (its one backoff), and nothing
//! a lost connection had queued or in flight goes out on the next, so each
//! connection publishes again from the store. A process that runs the broker
//! itself (the all-in-one binary) may bring a link of its own ([`Link`])
//! straight into the broker's router.
//!
//! Every kind reports the same events, in order, so the publisher's bookkeeping
//! (the outbox) does not care which one it talks to. Signals go out at QoS 0
//! on the same connection and report nothing: no packet id, no acknowledgement.

use std::future::Future;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use rumqttc::QoS;
use server::mqtt::BrokerUrl;
use server::mqtt::connection::{self, Capacity, ConnectionId, Driven, Requests, Sent, Session};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Events of an in-process link waiting for the publisher: more than the
/// acknowledgements of everything it may have in flight.
const LINK_EVENTS: usize = 1024;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The broker accepted the connection.
    Connected,
    /// The next publish handed over went out with this packet id.
    PacketId(u16),
    /// The broker acknowledged (PUBACK) this packet id.
    Acknowledged(u16),
    /// The connection is gone (why); a network link connects again by itself.
    Lost(String),
}

/// Hands publishes to the broker on one connection.
pub trait Publishes: Send {
    /// Hands a QoS 1 publish over; its packet id when known at once (else it
    /// follows as a [`LinkEvent::PacketId`]).
    fn publish(&mut self, topic: String, json: Bytes)
    -> BoxFuture<'_, Result<Option<u16>, String>>;

    /// Sends whatever [`Publishes::publish`] held back to send in one go.
    fn send_held(&mut self) -> BoxFuture<'_, Result<(), String>>;

    /// Sends a QoS 0 publish (a signal) now, after every publish held back:
    /// nothing is acknowledged and no packet id is reported.
    fn publish_signal(&mut self, topic: String, json: Bytes) -> BoxFuture<'_, Result<(), String>>;
}

/// The publisher's connection: `in_flight` QoS 1 publishes at most await their
/// PUBACK over the network (and rumqttc's queue holds twice that). `None`
/// when a provided link has no connection left to give.
pub fn open(target: BrokerTarget, in_flight: u16) -> Option<Connection> {
    match target {
        BrokerTarget::Network(broker) => {
            let mut options = broker.options(&server::mqtt::client_id("chat"));
            options.set_inflight(in_flight);
            let capacity = Capacity {
                requests: 2 * usize::from(in_flight),
                events: 2 * usize::from(in_flight),
            };
            let driver = connection::open(options, Session::Fresh, capacity);
            Some(Connection {
                kind: Kind::Network {
                    requests: driver.requests,
                    state: NetworkState::default(),
                    signal_room: usize::from(in_flight),
                    events: driver.events,
                },
                task: driver.task,
            })
        }
        BrokerTarget::Link(mut link) => link.connect(),
    }
}

/// A broker connection: publishes go out through it and its events come back.
pub struct Connection {
    kind: Kind,
    /// The task that reads the connection; it ends with it.
    task: JoinHandle<()>,
}

enum Kind {
    Network {
        requests: Requests,
        state: NetworkState,
        /// Signals that may wait in rumqttc's queue at once: with the QoS 1
        /// publishes in flight (as many at most), they fill it and never
        /// make it refuse a message.
        signal_room: usize,
        events: mpsc::Receiver<Driven>,
    },
    Link {
        sender: Box<dyn Publishes>,
        events: mpsc::Receiver<LinkEvent>,
    },
}

impl Connection {
    /// A link's connection that publishes through `sender` while a task runs
    /// `forward`, which reports the connection's events until it fails (its
    /// error is why, reported last).
    pub fn start<F, Fut>(sender: impl Publishes + 'static, forward: F) -> Connection
    where
        F: FnOnce(mpsc::Sender<LinkEvent>) -> Fut,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let (events_tx, events) = mpsc::channel(LINK_EVENTS);
        let forwarding = forward(events_tx.clone());
        let task = tokio::spawn(async move {
            if let Err(reason) = forwarding.await {
                let _ = events_tx.send(LinkEvent::Lost(reason)).await;
            }
        });
        Connection {
            kind: Kind::Link {
                sender: Box::new(sender),
                events,
            },
            task,
        }
    }

    /// The next event; `None` once the connection is gone for good.
    pub async fn recv(&mut self) -> Option<LinkEvent> {
        match &mut self.kind {
            Kind::Link { events, .. } => events.recv().await,
            Kind::Network { state, events, .. } => loop {
                if let Some(event) = state.event(events.recv().await?) {
                    return Some(event);
                }
            },
        }
    }

    /// The next event if one is waiting.
    fn try_recv(&mut self) -> Option<LinkEvent> {
        match &mut self.kind {
            Kind::Link { events, .. } => events.try_recv().ok(),
            Kind::Network { state, events, .. } => loop {
                if let Some(event) = state.event(events.try_recv().ok()?) {
                    return Some(event);
                }
            },
        }
    }

    /// Waits for an event, then takes those waiting behind it, up to `limit`
    /// in `events`; 0 once the connection is gone for good. Cancel-safe.
    pub async fn recv_many(&mut self, events: &mut Vec<LinkEvent>, limit: usize) -> usize {
        let Some(first) = self.recv().await else {
            return 0;
        };
        events.push(first);
        while events.len() < limit {
            match self.try_recv() {
                Some(event) => events.push(event),
                None => break,
            }
        }
        events.len()
    }

    /// Hands a QoS 1 publish over (see [`Publishes::publish`]); over the
    /// network it is refused once the connection it was meant for is gone.
    pub async fn publish(&mut self, topic: String, json: Bytes) -> Result<Option<u16>, String> {
        match &mut self.kind {
            Kind::Link { sender, .. } => sender.publish(topic, json).await,
            Kind::Network {
                requests, state, ..
            } => {
                let id = state.up.ok_or("not connected")?;
                let published = requests.publish(id, topic, QoS::AtLeastOnce, false, json);
                published
                    .map(|()| None)
                    .map_err(|e| format!("cannot publish: {e}"))
            }
        }
    }

    /// Hands a signal over at QoS 0 (see [`Publishes::publish_signal`]); over
    /// the network it is refused when the connection is gone or too many
    /// signals wait in rumqttc's queue already.
    pub async fn publish_signal(&mut self, topic: String, json: Bytes) -> Result<(), String> {
        match &mut self.kind {
            Kind::Link { sender, .. } => sender.publish_signal(topic, json).await,
            Kind::Network {
                requests,
                state,
                signal_room,
                ..
            } => {
                let id = state.up.ok_or("not connected")?;
                if state.signals_waiting >= *signal_room {
                    return Err("too many signals wait for the broker client".into());
                }
                requests
                    .publish(id, topic, QoS::AtMostOnce, false, json)
                    .map_err(|e| format!("cannot publish: {e}"))?;
                state.signals_waiting += 1;
                Ok(())
            }
        }
    }

    /// Sends what the link held back (see [`Publishes::send_held`]).
    pub async fn send_held(&mut self) -> Result<(), String> {
        match &mut self.kind {
            Kind::Link { sender, .. } => sender.send_held().await,
            Kind::Network { .. } => Ok(()),
        }
    }

    /// Gives up on the current connection after a failure of the publisher's
    /// own (a read of the store): over the network it disconnects, and the
    /// connection module connects again; a link ends (it cannot be opened
    /// twice).
    pub fn restart(&mut self) {
        match &self.kind {
            Kind::Network {
                requests, state, ..
            } => {
                if let Some(id) = &state.up
                    && let Err(e) = requests.disconnect(*id)
                {
                    log::debug!("the broker connection was going already: {e}");
                }
            }
            Kind::Link { .. } => self.task.abort(),
        }
    }
}

/// A connection's task ends with it, also when the publisher is dropped at a
/// stop.
impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the publisher follows of a network connection.
#[derive(Debug, Default)]
struct NetworkState {
    /// The connection up, as last reported: publishes are for it.
    up: Option<ConnectionId>,
    /// Signals handed to rumqttc on it and not written yet.
    signals_waiting: usize,
}

impl NetworkState {
    /// What the publisher hears of a network connection's event. A QoS 0
    /// publish (a signal) is written with packet id 0, which no QoS 1 publish
    /// has: it is counted off here, and the outbox never sees it.
    fn event(&mut self, driven: Driven) -> Option<LinkEvent> {
        match driven {
            Driven::Connected { id, .. } => {
                *self = NetworkState {
                    up: Some(id),
                    signals_waiting: 0,
                };
                Some(LinkEvent::Connected)
            }
            Driven::Sent(Sent::Publish(0)) => {
                self.signals_waiting = self.signals_waiting.saturating_sub(1);
                None
            }
            Driven::Sent(Sent::Publish(pkid)) => Some(LinkEvent::PacketId(pkid)),
            Driven::PubAck(pkid) => Some(LinkEvent::Acknowledged(pkid)),
            Driven::Lost(reason) => {
                *self = NetworkState::default();
                Some(LinkEvent::Lost(reason))
            }
            Driven::Sent(_) | Driven::Publish(_) | Driven::SubAck(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_connection_reports_what_the_outbox_needs_and_follows_which_is_up() {
        let mut state = NetworkState::default();
        let id = ConnectionId::for_tests(3);
        let connected = Driven::Connected {
            id,
            session_present: false,
        };
        assert_eq!(state.event(connected), Some(LinkEvent::Connected));
        assert_eq!(state.up, Some(id));
        let sent = state.event(Driven::Sent(Sent::Publish(7)));
        assert_eq!(sent, Some(LinkEvent::PacketId(7)));
        assert_eq!(
            state.event(Driven::PubAck(7)),
            Some(LinkEvent::Acknowledged(7))
        );
        assert_eq!(state.event(Driven::Sent(Sent::Subscribe(8))), None);
        let lost = state.event(Driven::Lost("gone".into()));
        assert_eq!(lost, Some(LinkEvent::Lost("gone".into())));
        assert_eq!(state.up, None, "publishes wait for the next connection");
    }

    #[test]
    fn a_written_signal_is_counted_off_and_never_reaches_the_outbox() {
        let mut state = NetworkState::default();
        let connected = Driven::Connected {
            id: ConnectionId::for_tests(1),
            session_present: false,
        };
        state.event(connected);
        state.signals_waiting = 2;
        assert_eq!(state.event(Driven::Sent(Sent::Publish(0))), None);
        assert_eq!(state.signals_waiting, 1);
        state.event(Driven::Lost("gone".into()));
        assert_eq!(
            state.signals_waiting, 0,
            "a lost connection's queue is gone"
        );
    }
}
