//! Requests to a driven connection ([`super::connection`]), each for one
//! connection only.

use std::sync::{Arc, Mutex, MutexGuard};

use rumqttc::{AsyncClient, ClientError, QoS, SubscribeFilter};

/// Which connection of a driven client: a new one after every reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub(crate) u64);

impl ConnectionId {
    /// The one connection of a link that is up from the start and never
    /// replaced (into a broker running in the same process).
    pub fn single() -> Self {
        ConnectionId(1)
    }

    /// A connection number, for tests of clients that never reach a broker.
    pub fn for_tests(n: u64) -> Self {
        ConnectionId(n)
    }
}

/// Why a request did not go out.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The connection it was meant for is gone.
    #[error("not connected")]
    NotConnected,
    /// rumqttc's request queue is full, or its event loop is gone.
    #[error("{0}")]
    Client(#[from] ClientError),
}

/// Lets requests through to one connection at a time. A std lock: it is held
/// only while a request is put in rumqttc's queue without waiting (the
/// `try_` calls), never across an await.
#[derive(Debug, Clone, Default)]
pub(crate) struct Gate(Arc<Mutex<Option<ConnectionId>>>);

impl Gate {
    pub(crate) fn open(&self, id: ConnectionId) {
        *self.lock() = Some(id);
    }

    pub(crate) fn close(&self) {
        *self.lock() = None;
    }

    /// A request checked and queued under one lock: the driver cannot close
    /// the gate (and drain rumqttc's queue) in between.
    fn pass<T>(
        &self,
        id: ConnectionId,
        send: impl FnOnce() -> Result<T, ClientError>,
    ) -> Result<T, Refused> {
        let open = self.lock();
        if *open != Some(id) {
            return Err(Refused::NotConnected);
        }
        Ok(send()?)
    }

    /// Nothing is left half-done under this lock.
    fn lock(&self) -> MutexGuard<'_, Option<ConnectionId>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The request side of a driven connection. Cheap to clone. Every call
/// names the connection it is for (from [`super::connection::Driven::Connected`])
/// and never waits: a full queue is refused, for the client to decide.
#[derive(Clone)]
pub struct Requests {
    client: AsyncClient,
    gate: Gate,
}

impl Requests {
    pub(crate) fn new(client: AsyncClient, gate: Gate) -> Self {
        Requests { client, gate }
    }

    pub fn publish(
        &self,
        id: ConnectionId,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), Refused> {
        self.gate
            .pass(id, || self.client.try_publish(topic, qos, retain, payload))
    }

    pub fn subscribe(
        &self,
        id: ConnectionId,
        filters: impl IntoIterator<Item = SubscribeFilter>,
    ) -> Result<(), Refused> {
        self.gate
            .pass(id, || self.client.try_subscribe_many(filters))
    }

    pub fn unsubscribe(&self, id: ConnectionId, filter: String) -> Result<(), Refused> {
        self.gate.pass(id, || self.client.try_unsubscribe(filter))
    }

    /// Acknowledges a QoS 1 message taken with manual acknowledgements.
    pub fn ack(&self, id: ConnectionId, publish: &rumqttc::Publish) -> Result<(), Refused> {
        self.gate.pass(id, || self.client.try_ack(publish))
    }

    /// Ends the connection; the driver then connects again (a client that
    /// must start over on a connection it cannot trust any more).
    pub fn disconnect(&self, id: ConnectionId) -> Result<(), Refused> {
        self.gate.pass(id, || self.client.try_disconnect())
    }

    /// rumqttc's own handle, for a client whose requests need no gate: they
    /// may go out on whichever connection is up when the event loop takes
    /// them, and rumqttc waits for room in its queue.
    pub fn ungated(&self) -> AsyncClient {
        self.client.clone()
    }
}
