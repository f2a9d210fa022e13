//! The one way Crier drives a broker connection: rumqttc's `EventLoop` polled
//! in a task of its own, its events handed out on a bounded channel.
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
//! connected) and poll again, which reconnects. A client that must start each
//! connection afresh asks for [`Reconnect::Never`] and makes a new client.

use std::time::Duration;

use rumqttc::{Event, EventLoop, Incoming};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The first pause after a connection error.
pub const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest pause between attempts while the broker stays away.
pub const LAST_RETRY: Duration = Duration::from_secs(4);

/// What the driver hands its client.
#[derive(Debug)]
pub enum Driven {
    Event(Event),
    /// The connection failed (why); with [`Reconnect::Backoff`] the driver
    /// tries again after a pause, and a ConnAck says it is back.
    Lost(String),
}

/// What the driver does after a connection error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Poll again after a pause: rumqttc reconnects with the same client.
    Backoff,
    /// Report the error and stop.
    Never,
}

/// Starts the task that polls `eventloop`, and returns its events (at most
/// `capacity` waiting: a client that falls behind stops the polling, and the
/// broker's flow control takes over). The task ends as soon as the receiver
/// is dropped (its client ended: its lifetime is the client's), or after the
/// first error with [`Reconnect::Never`].
pub fn drive(
    eventloop: EventLoop,
    capacity: usize,
    reconnect: Reconnect,
) -> (mpsc::Receiver<Driven>, JoinHandle<()>) {
    let (events, driven) = mpsc::channel(capacity.max(1));
    let task = tokio::spawn(poll_until_dropped(eventloop, events, reconnect));
    (driven, task)
}

async fn poll_until_dropped(
    mut eventloop: EventLoop,
    events: mpsc::Sender<Driven>,
    reconnect: Reconnect,
) {
    let mut pause = Backoff::default();
    loop {
        // Cancelling the poll (a handshake included) is right only here: once
        // the client is gone, nothing waits for the connection.
        let polled = tokio::select! {
            polled = eventloop.poll() => polled,
            () = events.closed() => return,
        };
        let driven = match polled {
            Ok(event) => {
                if matches!(event, Event::Incoming(Incoming::ConnAck(_))) {
                    pause.reset();
                }
                Driven::Event(event)
            }
            Err(e) => Driven::Lost(e.to_string()),
        };
        let lost = matches!(driven, Driven::Lost(_));
        if events.send(driven).await.is_err() {
            return;
        }
        if lost {
            if reconnect == Reconnect::Never {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(pause.next()) => {}
                () = events.closed() => return,
            }
        }
    }
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
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_last_and_start_again_once_connected() {
        let mut backoff = Backoff::default();
        let pauses: Vec<Duration> = (0..6).map(|_| backoff.next()).collect();
        assert_eq!(
            pauses,
            [250, 500, 1000, 2000, 4000, 4000].map(Duration::from_millis)
        );
        backoff.reset();
        assert_eq!(backoff.next(), FIRST_RETRY);
    }

    /// A client of a loopback port nobody listens on (the listener that
    /// picked it is gone).
    fn refused_client() -> (rumqttc::AsyncClient, EventLoop) {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").port()
        };
        let options = rumqttc::MqttOptions::new("driver-test", "127.0.0.1", port);
        rumqttc::AsyncClient::new(options, 10)
    }

    #[tokio::test]
    async fn a_refused_connection_is_reported_and_retried_until_the_receiver_goes() {
        let (_client, eventloop) = refused_client();
        let (mut driven, task) = drive(eventloop, 4, Reconnect::Backoff);
        for attempt in 0..2 {
            let event = tokio::time::timeout(Duration::from_secs(5), driven.recv())
                .await
                .expect("reported in time");
            assert!(
                matches!(event, Some(Driven::Lost(_))),
                "attempt {attempt}: {event:?}"
            );
        }
        drop(driven);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the driver stops once nobody listens")
            .expect("no panic");
    }

    #[tokio::test]
    async fn never_reconnect_stops_after_the_first_error() {
        let (_client, eventloop) = refused_client();
        let (mut driven, task) = drive(eventloop, 4, Reconnect::Never);
        let event = tokio::time::timeout(Duration::from_secs(5), driven.recv())
            .await
            .expect("reported in time");
        assert!(matches!(event, Some(Driven::Lost(_))), "{event:?}");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the driver stops")
            .expect("no panic");
        assert!(driven.recv().await.is_none(), "nothing after the error");
    }
}
