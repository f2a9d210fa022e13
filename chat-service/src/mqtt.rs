//! The publisher: owns the chat-service's broker connection and drains the outbox.
//!
//! Stored messages are announced here in id order (see
//! [`crate::history::History::append`]). A batch is flushed to disk before it
//! reaches the broker, so a subscriber never sees an id that a crash could hand out
//! again. Each broker connection is a fresh rumqttc client: when it drops, nothing
//! is left in a client queue to be lost or sent twice — the next connection first
//! re-publishes, from the store and in id order, every message the broker did not
//! acknowledge (the outbox), then goes on with live messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use protocol::mqtt::{BrokerStatus, BrokerUrl};
use protocol::{ChannelId, topic};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::feed::Feed;
use crate::history::History;
use crate::outbox::Outbox;

/// Most notices taken per disk flush, and messages read per outbox page.
const BATCH: usize = 256;
/// Pause between reconnect attempts while the broker is unreachable.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// rumqttc's request queue between the client handle and the event loop.
const REQUEST_CAPACITY: usize = 1024;
/// QoS 1 publishes awaiting their PUBACK at once.
const IN_FLIGHT: u16 = 512;

/// A message that was just stored.
struct Stored {
    channel: ChannelId,
    id: u64,
    json: Bytes,
}

/// Handle used by request handlers to announce stored messages.
#[derive(Clone)]
pub struct Publisher {
    notices: mpsc::UnboundedSender<Stored>,
    /// Streams in this process, fed without the broker.
    feed: Option<Feed>,
    status: BrokerStatus,
    outbox_depth: Arc<AtomicU64>,
}

impl Publisher {
    /// Announces a stored message; never waits. Call in id order per channel.
    pub fn enqueue(&self, channel: ChannelId, id: u64, json: Bytes) {
        if let Some(feed) = &self.feed {
            feed.announce(channel, id, json.clone());
        }
        if self.notices.send(Stored { channel, id, json }).is_err() {
            log::error!("publisher task has stopped; {channel} #{id} stays in the outbox");
        }
    }

    /// Also announces every stored message to `feed`.
    pub fn feeding(&mut self, feed: Feed) {
        self.feed = Some(feed);
    }

    pub fn status(&self) -> &BrokerStatus {
        &self.status
    }

    /// Stored messages the broker has not acknowledged yet.
    pub fn outbox_depth(&self) -> u64 {
        self.outbox_depth.load(Ordering::Relaxed)
    }
}

/// Starts the publisher task, which connects (and reconnects) in the background.
/// The handle ends only if the task panics.
pub fn start(
    broker: &BrokerUrl,
    prefix: &str,
    history: History,
) -> Result<(Publisher, JoinHandle<()>), sled::Error> {
    let mut options = broker.options(&protocol::mqtt::client_id("chat"));
    options.set_inflight(IN_FLIGHT);
    let outbox = Outbox::new(history.last_ids(), &history.published_watermarks()?);
    let (notices, notices_rx) = mpsc::unbounded_channel();
    let status = BrokerStatus::default();
    let publisher = Publisher {
        notices,
        feed: None,
        status: status.clone(),
        outbox_depth: outbox.depth_gauge(),
    };
    let task = PublisherTask {
        options,
        prefix: prefix.to_string(),
        history,
        outbox,
        status,
        notices: notices_rx,
        reported_unreachable: false,
    };
    Ok((publisher, tokio::spawn(task.run())))
}

struct PublisherTask {
    options: MqttOptions,
    prefix: String,
    history: History,
    outbox: Outbox,
    status: BrokerStatus,
    notices: mpsc::UnboundedReceiver<Stored>,
    /// The current outage was logged already.
    reported_unreachable: bool,
}

/// Why a connection ended.
enum Ended {
    Lost(String),
    /// Every `Publisher` handle is gone: the service is stopping.
    NoMoreNotices,
}

impl PublisherTask {
    async fn run(mut self) {
        loop {
            let (client, eventloop) = AsyncClient::new(self.options.clone(), REQUEST_CAPACITY);
            let (events_tx, events) = mpsc::unbounded_channel();
            let (failure_tx, mut failure) = oneshot::channel();
            let poller = tokio::spawn(poll(eventloop, events_tx, failure_tx));
            let ended = self.serve(&client, events).await;
            poller.abort();
            let reason = match ended {
                Ended::NoMoreNotices => return,
                Ended::Lost(reason) => failure.try_recv().unwrap_or(reason),
            };
            self.report_disconnection(&reason);
            self.wait_before_reconnecting().await;
        }
    }

    /// Says once per outage that the broker is gone or cannot be reached.
    fn report_disconnection(&mut self, reason: &str) {
        let depth = self.outbox.depth();
        if self.status.is_connected() {
            log::warn!("MQTT connection lost: {reason}; {depth} messages in the outbox");
        } else if !self.reported_unreachable {
            log::warn!("cannot connect to the MQTT broker: {reason}; retrying");
        }
        self.reported_unreachable = true;
        self.status.set(false);
    }

    async fn serve(
        &mut self,
        client: &AsyncClient,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) -> Ended {
        if let Err(ended) = self.wait_for_connack(&mut events).await {
            return ended;
        }
        log::info!(
            "connected to the MQTT broker; {} messages in the outbox",
            self.outbox.depth()
        );
        self.status.set(true);
        self.reported_unreachable = false;
        self.outbox.start_connection();
        if let Err(ended) = self.publish_backlog(client).await {
            return ended;
        }
        self.forward_live(client, &mut events).await
    }

    async fn wait_for_connack(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<Event>,
    ) -> Result<(), Ended> {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Event::Incoming(Incoming::ConnAck(_))) => return Ok(()),
                    Some(_) => {}
                    None => return Err(Ended::Lost("connection failed".into())),
                },
                received = self.notices.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        return Err(Ended::NoMoreNotices);
                    }
                    self.note_stored(&mut batch);
                }
            }
        }
    }

    /// Everything stored but not acknowledged, channel by channel, in id order.
    async fn publish_backlog(&mut self, client: &AsyncClient) -> Result<(), Ended> {
        let backlog = self.outbox.backlog();
        if backlog.is_empty() {
            return Ok(());
        }
        self.flush().await;
        for (channel, _) in backlog {
            self.publish_from_store(client, channel, u64::MAX).await?;
        }
        Ok(())
    }

    async fn forward_live(
        &mut self,
        client: &AsyncClient,
        events: &mut mpsc::UnboundedReceiver<Event>,
    ) -> Ended {
        let mut notices = Vec::with_capacity(BATCH);
        let mut received_events = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                received = events.recv_many(&mut received_events, BATCH) => {
                    if received == 0 {
                        return Ended::Lost("event loop ended".into());
                    }
                    if let Err(ended) = self.on_events(&mut received_events) {
                        return ended;
                    }
                }
                received = self.notices.recv_many(&mut notices, BATCH) => {
                    if received == 0 {
                        return Ended::NoMoreNotices;
                    }
                    if let Err(ended) = self.publish_stored(client, &mut notices).await {
                        return ended;
                    }
                }
            }
        }
    }

    fn on_events(&mut self, events: &mut Vec<Event>) -> Result<(), Ended> {
        for event in events.drain(..) {
            match event {
                Event::Outgoing(Outgoing::Publish(packet_id)) => {
                    self.outbox.packet_id_assigned(packet_id)
                }
                Event::Incoming(Incoming::PubAck(ack)) => self.outbox.acknowledged(ack.pkid),
                Event::Incoming(Incoming::Disconnect) => {
                    return Err(Ended::Lost("the broker disconnected".into()));
                }
                _ => {}
            }
        }
        self.persist_watermarks();
        Ok(())
    }

    /// Publishes a batch of just-stored messages once they are on disk. A message
    /// right after the last one sent goes out as announced; one further ahead (the
    /// backlog is still being sent) pulls the missing ids from the store first.
    async fn publish_stored(
        &mut self,
        client: &AsyncClient,
        batch: &mut Vec<Stored>,
    ) -> Result<(), Ended> {
        self.flush().await;
        for stored in batch.drain(..) {
            self.outbox.stored(stored.channel, stored.id);
            let sent = self.outbox.sent_through(stored.channel);
            if stored.id == sent + 1 {
                self.publish(client, stored.channel, stored.id, stored.json)
                    .await?;
            } else if stored.id > sent {
                self.publish_from_store(client, stored.channel, stored.id)
                    .await?;
            }
        }
        Ok(())
    }

    /// Publishes the channel's stored messages after the last one sent, up to `target`.
    async fn publish_from_store(
        &mut self,
        client: &AsyncClient,
        channel: ChannelId,
        target: u64,
    ) -> Result<(), Ended> {
        loop {
            let after = self.outbox.sent_through(channel);
            if after >= target {
                return Ok(());
            }
            let page = self
                .history
                .after_raw(channel, after, BATCH)
                .map_err(|e| Ended::Lost(format!("cannot read the outbox: {e}")))?;
            let short = page.len() < BATCH;
            for (id, json) in page.into_iter().take_while(|(id, _)| *id <= target) {
                self.publish(client, channel, id, json).await?;
            }
            if short {
                return Ok(());
            }
        }
    }

    async fn publish(
        &mut self,
        client: &AsyncClient,
        channel: ChannelId,
        id: u64,
        json: Bytes,
    ) -> Result<(), Ended> {
        let topic = topic::channel_topic(&self.prefix, channel);
        client
            .publish_bytes(topic, QoS::AtLeastOnce, false, json)
            .await
            .map_err(|e| Ended::Lost(format!("cannot publish: {e}")))?;
        self.outbox.sent(channel, id);
        Ok(())
    }

    fn note_stored(&mut self, batch: &mut Vec<Stored>) {
        for stored in batch.drain(..) {
            self.outbox.stored(stored.channel, stored.id);
        }
    }

    fn persist_watermarks(&mut self) {
        for (channel, acked) in self.outbox.take_moved() {
            if let Err(e) = self.history.set_published_through(channel, acked) {
                log::error!("cannot record what the broker acknowledged on {channel}: {e}");
            }
        }
    }

    async fn flush(&self) {
        if let Err(e) = self.history.flush().await {
            log::error!("flush before publishing failed: {e}");
        }
    }

    /// Sleeps before the next attempt, noting what is stored meanwhile (the store
    /// holds the messages; only their ids matter here).
    async fn wait_before_reconnecting(&mut self) {
        let pause = tokio::time::sleep(RECONNECT_DELAY);
        tokio::pin!(pause);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                _ = &mut pause => return,
                received = self.notices.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        return;
                    }
                    self.note_stored(&mut batch);
                }
            }
        }
    }
}

/// Drives one connection's event loop, forwarding its events, until it fails.
/// It never polls again after an error: that would reconnect with this client's
/// leftover state, and the next connection starts from the store instead.
async fn poll(
    mut eventloop: EventLoop,
    events: mpsc::UnboundedSender<Event>,
    failure: oneshot::Sender<String>,
) {
    loop {
        match eventloop.poll().await {
            Ok(event) => {
                if events.send(event).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = failure.send(e.to_string());
                return;
            }
        }
    }
}
