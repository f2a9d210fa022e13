//! The publisher: owns the chat-service's one broker connection.
//!
//! Stored messages are queued here in id order (see [`crate::history::History::append`]).
//! The forwarding task makes sure a batch is on disk before it reaches the broker, so
//! a subscriber never sees an id that a crash could hand out again; the event-loop
//! task keeps polling rumqttc, which is how it reconnects.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::mqtt::{BrokerStatus, BrokerUrl};
use protocol::{ChannelId, topic};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::history::History;

/// Most messages taken from the queue per disk flush.
const BATCH: usize = 256;
/// Pause between reconnect attempts while the broker is unreachable.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// rumqttc's request queue between the client handle and the event loop.
const REQUEST_CAPACITY: usize = 1024;

struct Publication {
    topic: String,
    payload: Bytes,
}

/// Handle used by request handlers to queue a stored message for the broker.
#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::UnboundedSender<Publication>,
    prefix: Arc<str>,
    status: BrokerStatus,
}

impl Publisher {
    /// Queues a message; never waits (the queue is drained by the forwarding task).
    pub fn enqueue(&self, channel: ChannelId, payload: Bytes) {
        let publication = Publication {
            topic: topic::channel_topic(&self.prefix, channel),
            payload,
        };
        if self.queue.send(publication).is_err() {
            log::error!("publisher task has stopped; message for {channel} not published");
        }
    }

    pub fn status(&self) -> &BrokerStatus {
        &self.status
    }
}

/// Connects to the broker and starts the two publisher tasks. The returned handle
/// ends only if a task panics, so `main` can watch it next to the HTTP server.
pub fn start(broker: &BrokerUrl, prefix: &str, history: History) -> (Publisher, JoinHandle<()>) {
    let options = broker.options(&protocol::mqtt::client_id("chat"));
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let (queue, pending) = mpsc::unbounded_channel();
    let status = BrokerStatus::default();
    let forward = tokio::spawn(forward_stored(pending, client, history));
    let poll = tokio::spawn(poll_events(eventloop, status.clone()));
    let watcher = tokio::spawn(async move {
        let result = tokio::select! {
            result = forward => result,
            result = poll => result,
        };
        if let Err(e) = result {
            log::error!("MQTT publisher task failed: {e}");
        }
    });
    let publisher = Publisher {
        queue,
        prefix: prefix.into(),
        status,
    };
    (publisher, watcher)
}

async fn forward_stored(
    mut pending: mpsc::UnboundedReceiver<Publication>,
    client: AsyncClient,
    history: History,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while pending.recv_many(&mut batch, BATCH).await > 0 {
        if let Err(e) = history.flush().await {
            log::error!("flush before publishing failed: {e}");
        }
        for publication in batch.drain(..) {
            if let Err(e) = client
                .publish_bytes(
                    publication.topic,
                    QoS::AtLeastOnce,
                    false,
                    publication.payload,
                )
                .await
            {
                log::error!("could not queue a publish: {e}");
            }
        }
    }
}

async fn poll_events(mut eventloop: EventLoop, status: BrokerStatus) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                log::info!("connected to the MQTT broker");
                status.set(true);
            }
            Ok(_) => {}
            Err(e) => {
                if status.is_connected() {
                    log::warn!("MQTT connection lost: {e}");
                }
                status.set(false);
                tokio::time::sleep(RECONNECT_DELAY).await;
            }
        }
    }
}
