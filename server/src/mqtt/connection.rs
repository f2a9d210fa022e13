//! The one way Crier drives a broker connection: rumqttc's `EventLoop` polled
//! in a task of its own, its events handed out on a bounded channel, and
//! requests let through only to the connection they were meant for.
//!
//! rumqttc's CONNECT handshake is a local future inside `EventLoop::poll()`;
//! a caller that polls it inside `select!` next to another branch cancels the
//! handshake whenever the other branch fires first (rumqtt#601), so a busy
//! client after a broker restart can keep aborting its own reconnect. Here
//! nothing but the driver polls, and every client is a loop over [`Driven`]
//! events, free to `select!` on them (a channel receive is cancel-safe).
//!
//! One reconnect policy for every client: after an error, wait (from
//! [`FIRST_RETRY`], doubling up to [`LAST_RETRY`], back to the start once
//! connected) and poll again, which reconnects. What a new connection
//! inherits from the one before is the [`Session`], chosen by the client.
//!
//! Each connection has a number ([`ConnectionId`], in [`Driven::Connected`]);
//! a request made through [`Requests`] names the connection it is for and is
//! refused on any other. So what a client sent on one connection never goes
//! out on the next, and the order of the [`Driven::Sent`] events is the order
//! of the client's own requests on that connection: that is how a client
//! learns which packet id rumqttc gave each of them (its `publish` and
//! `subscribe` do not say).

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, Request};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::mqtt::requests::Gate;
pub use crate::mqtt::requests::{ConnectionId, Requests};

/// The first pause after a connection error.
pub const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest pause between attempts while the broker stays away.
pub const LAST_RETRY: Duration = Duration::from_secs(4);

/// What a new connection keeps of the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// Nothing: a clean session, and whatever was queued, in flight or half
    /// reported on the lost connection is dropped here. The client starts
    /// each connection from its own state (subscribes again, publishes again
    /// what was not acknowledged).
    Fresh,
    /// The broker's session survives (clean session off; the client id must
    /// stay the same across restarts): rumqttc sends again what was in
    /// flight, and the broker keeps subscriptions and queued messages.
    Persistent,
}

impl Session {
    fn apply(self, options: &mut MqttOptions) {
        options.set_clean_session(self == Session::Fresh);
    }
}

/// What the driver hands its client, in the order it happened.
#[derive(Debug)]
pub enum Driven {
    /// The broker accepted a connection; requests for `id` go out on it.
    Connected {
        id: ConnectionId,
        /// The broker kept the session (only with [`Session::Persistent`]).
        session_present: bool,
    },
    /// A request was written with this packet id.
    Sent(Sent),
    /// A message from the broker.
    Publish(rumqttc::Publish),
    /// The broker acknowledged the QoS 1 publish with this packet id.
    PubAck(u16),
    /// The broker answered the SUBSCRIBE with this packet id.
    SubAck(rumqttc::SubAck),
    /// The connection failed (why); the driver tries again after a pause,
    /// and [`Driven::Connected`] says it is back.
    Lost(String),
}

/// A request written to the broker, and the packet id it went out with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Publish(u16),
    Subscribe(u16),
    Unsubscribe(u16),
}

/// Sizes of the queues around the event loop.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// Requests waiting for the event loop (rumqttc's request channel).
    pub requests: usize,
    /// Events waiting for the client: a client that falls behind stops the
    /// polling, and the broker's flow control takes over.
    pub events: usize,
}

/// A driven connection: the client's side of it.
pub struct Driver {
    /// Where requests go (see [`Requests`]).
    pub requests: Requests,
    /// What happens on the connection.
    pub events: mpsc::Receiver<Driven>,
    /// The polling task; it ends once `events` is dropped.
    pub task: JoinHandle<()>,
}

/// Connects with `options` (its clean-session flag set from `session`) and
/// keeps reconnecting until the returned events are dropped.
pub fn open(mut options: MqttOptions, session: Session, capacity: Capacity) -> Driver {
    session.apply(&mut options);
    let (client, eventloop) = AsyncClient::new(options, capacity.requests.max(1));
    let gate = Gate::default();
    let requests = Requests::new(client, gate.clone());
    let (events, driven) = mpsc::channel(capacity.events.max(1));
    let poller = Poller {
        eventloop,
        session,
        gate,
        events,
        last_id: 0,
    };
    let task = tokio::spawn(poller.poll_until_dropped());
    Driver {
        requests,
        events: driven,
        task,
    }
}

struct Poller {
    eventloop: EventLoop,
    session: Session,
    gate: Gate,
    events: mpsc::Sender<Driven>,
    last_id: u64,
}

impl Poller {
    async fn poll_until_dropped(mut self) {
        let mut pause = Backoff::default();
        loop {
            // Cancelling the poll (a handshake included) is right only here:
            // once the client is gone, nothing waits for the connection.
            let polled = tokio::select! {
                polled = self.eventloop.poll() => polled,
                () = self.events.closed() => return,
            };
            let driven = match polled {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                    pause.reset();
                    self.connected(ack.session_present)
                }
                Ok(event) => match translate(event) {
                    Some(driven) => driven,
                    None => continue,
                },
                Err(e) => {
                    self.lost();
                    Driven::Lost(e.to_string())
                }
            };
            let lost = matches!(driven, Driven::Lost(_));
            if self.events.send(driven).await.is_err() {
                return;
            }
            if lost {
                tokio::select! {
                    () = tokio::time::sleep(pause.next()) => {}
                    () = self.events.closed() => return,
                }
            }
        }
    }

    /// Opens the gate to the new connection before the client hears of it.
    fn connected(&mut self, session_present: bool) -> Driven {
        self.last_id += 1;
        let id = ConnectionId(self.last_id);
        self.gate.open(id);
        Driven::Connected {
            id,
            session_present,
        }
    }

    /// Closes the gate, then settles what rumqttc carries over to the next
    /// connection as the session asks.
    fn lost(&mut self) {
        self.gate.close();
        // Moves in-flight publishes and every request still queued (none
        // through the gate after this) to `pending`; the network is gone
        // already, so this cuts nothing.
        self.eventloop.clean();
        let state = &mut self.eventloop.state;
        // Events of the lost connection not handed out yet (a write that
        // failed after its event was queued, packets read before the error).
        state.events.clear();
        // A publish held for a packet id still in use: rumqttc keeps it (and
        // stops taking requests) until an acknowledgement no new connection
        // will bring, until its keep-alive gives up, again and again.
        let collided = state.collision.take();
        match self.session {
            Session::Fresh => self.eventloop.pending.clear(),
            Session::Persistent => {
                if let Some(publish) = collided {
                    self.eventloop.pending.push_back(Request::Publish(publish));
                }
            }
        }
    }
}

/// The events a client acts on; the rest (pings, acks we send) stay here.
fn translate(event: Event) -> Option<Driven> {
    let driven = match event {
        Event::Incoming(Incoming::Publish(publish)) => Driven::Publish(publish),
        Event::Incoming(Incoming::PubAck(ack)) => Driven::PubAck(ack.pkid),
        Event::Incoming(Incoming::SubAck(ack)) => Driven::SubAck(ack),
        Event::Outgoing(Outgoing::Publish(pkid)) => Driven::Sent(Sent::Publish(pkid)),
        Event::Outgoing(Outgoing::Subscribe(pkid)) => Driven::Sent(Sent::Subscribe(pkid)),
        Event::Outgoing(Outgoing::Unsubscribe(pkid)) => Driven::Sent(Sent::Unsubscribe(pkid)),
        _ => return None,
    };
    Some(driven)
}

/// Pauses between attempts: doubling from [`FIRST_RETRY`] to [`LAST_RETRY`].
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST_RETRY }
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(LAST_RETRY);
        pause
    }

    fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }
}

#[cfg(test)]
mod tests;
