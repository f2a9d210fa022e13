//! The node's connection to the broker: over the network (rumqttc, through
//! the one connection module every client uses), or, for a process that runs
//! the broker itself (the all-in-one binary), a link of its own straight into
//! the broker's router. Both report the same [`Driven`] events to the
//! subscriber, so its bookkeeping, the hub and the streams do not care which
//! one carries a message; only what the link is made of lives with the
//! broker, outside this crate.

use futures_util::future::BoxFuture;
use rumqttc::{QoS, SubscribeFilter};
use server::mqtt::connection::{ConnectionId, Driven, Requests};
use tokio::sync::mpsc;

/// Requests into a broker running in this process. None of them waits on
/// the network; each is taken by the broker's router in order.
pub trait LinkRequests: Send {
    /// Subscribes to `filters` in one SUBSCRIBE, at most once: the router
    /// hands a link what it holds for it from its log, pausing while the
    /// link has not taken what it was given, so nothing is lost between
    /// them, and no acknowledgement has to go back per message. Returns the
    /// packet id the [`Driven::SubAck`] answering it carries.
    fn subscribe(&mut self, filters: Vec<String>) -> Result<u16, String>;

    fn unsubscribe(&mut self, filter: String) -> Result<(), String>;
}

/// Forwards what the broker sends the link, as [`Driven`] events, until the
/// broker is gone (its error) or nobody listens any more (`Ok`).
pub type Forward =
    Box<dyn FnOnce(mpsc::Sender<Driven>) -> BoxFuture<'static, Result<(), String>> + Send>;

/// A link into the broker's router, from the process that runs it.
pub struct InProcessLink {
    pub requests: Box<dyn LinkRequests>,
    /// Started once; it reports [`Driven::Connected`] first.
    pub forward: Forward,
}

/// The connection a link has: it is up from the start and never replaced.
pub fn link_connection() -> ConnectionId {
    ConnectionId::single()
}

/// Where the subscriber's requests go.
pub(super) enum Requester {
    Network(Requests),
    InProcess(Box<dyn LinkRequests>),
}

impl Requester {
    /// Hands one SUBSCRIBE over; the packet id when it is known at once (a
    /// network connection reports it as [`Driven::Sent`] once written).
    pub(super) fn subscribe(
        &mut self,
        connection: ConnectionId,
        filters: Vec<(String, QoS)>,
    ) -> Result<Option<u16>, String> {
        match self {
            Requester::Network(requests) => {
                let filters = filters
                    .into_iter()
                    .map(|(filter, qos)| SubscribeFilter::new(filter, qos));
                requests
                    .subscribe(connection, filters)
                    .map(|()| None)
                    .map_err(|e| e.to_string())
            }
            Requester::InProcess(link) => {
                let filters = filters.into_iter().map(|(filter, _)| filter).collect();
                link.subscribe(filters).map(Some)
            }
        }
    }

    pub(super) fn unsubscribe(
        &mut self,
        connection: ConnectionId,
        filter: String,
    ) -> Result<(), String> {
        match self {
            Requester::Network(requests) => requests
                .unsubscribe(connection, filter)
                .map_err(|e| e.to_string()),
            Requester::InProcess(link) => link.unsubscribe(filter),
        }
    }
}
