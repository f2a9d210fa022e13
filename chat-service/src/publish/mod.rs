//! The publisher: owns the chat-service's broker connection and drains the outbox.
//!
//! The store announces each message once it is synced, in id order per channel
//! ([`crate::store::Announcements`]), so a subscriber never sees an id that a
//! restart could hand out again. Each broker connection starts afresh (the
//! connection module's fresh session over the network; see [`link`] for the
//! all-in-one's in-process link): when it drops, nothing is left in a client
//! queue to be lost or sent twice — the next connection first re-publishes,
//! from the store and in id order, every message the broker did not
//! acknowledge (the outbox), then goes on with live messages. Reconnecting,
//! and the pause before it, is the connection module's.
//!
//! Signals (typing, read markers) take the same connection: handlers hand
//! them over on a small bounded queue ([`Publisher::send_signal`]), and the
//! task publishes each at QoS 0 between messages. They are never stored, so
//! nothing of them is published again: one that cannot go out (no
//! connection, no room in the client) is dropped and counted.

pub mod link;
pub mod outbox;
mod signals;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use protocol::{ChannelId, topic};
use server::metrics::names;
use server::mqtt::BrokerStatus;
use server::tasks::{Background, CancellationToken};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::store::{Announcements, Store, Stored};
use link::{BrokerTarget, Connection, LinkEvent};
use outbox::Outbox;
pub use signals::SignalRefused;
use signals::{OutgoingSignal, SIGNAL_QUEUE};

/// Messages read per outbox page.
const BATCH: usize = 256;
/// QoS 1 publishes awaiting their PUBACK at once.
const IN_FLIGHT: u16 = 512;
/// How long an acknowledged watermark may wait before it is written to the
/// store. Writing it at every acknowledgement took a tenth of the all-in-one's
/// CPU at full ingest (a sled insert per channel per PUBACK batch); a watermark
/// lost in a crash only means re-publishing what came after it, which every
/// subscriber drops by id.
const WATERMARK_INTERVAL: Duration = Duration::from_millis(200);
/// What the rest of the service sees of the publisher: the broker's state,
/// the outbox's depth, and where signals go.
#[derive(Clone)]
pub struct Publisher {
    status: BrokerStatus,
    outbox_depth: Arc<AtomicU64>,
    signals: mpsc::Sender<OutgoingSignal>,
}

impl Publisher {
    pub fn status(&self) -> &BrokerStatus {
        &self.status
    }

    /// Stored messages the broker has not acknowledged yet.
    pub fn outbox_depth(&self) -> u64 {
        self.outbox_depth.load(Ordering::Relaxed)
    }
}

/// Starts the publisher task, which connects (and reconnects) in the background.
/// The handle ends when the service stops (see [`Background`]) or if the task
/// panics.
pub fn start(
    broker: BrokerTarget,
    prefix: &str,
    store: Store,
    announcements: Announcements,
    background: &Background,
) -> Result<(Publisher, JoinHandle<()>), sled::Error> {
    let outbox = Outbox::new(store.last_ids()?, &store.published_watermarks()?);
    let status = BrokerStatus::default();
    let (signals_tx, signals) = mpsc::channel(SIGNAL_QUEUE);
    let publisher = Publisher {
        status: status.clone(),
        outbox_depth: outbox.depth_gauge(),
        signals: signals_tx,
    };
    let task = PublisherTask {
        target: Some(broker),
        prefix: prefix.to_string(),
        store,
        outbox,
        status,
        announcements,
        reported_unreachable: false,
        watermarks_due: None,
        to_broker: metrics::histogram!(names::PUBLISH_DURATION),
        acks: 0,
        signals,
        signals_dropped: crate::metrics::signals_dropped(),
    };
    let task = background.spawn_until_stopped(task.run_until(background.stopping()));
    Ok((publisher, task))
}

/// One acknowledgement in this many is timed (the first one included).
const ACK_SAMPLE_EVERY: u64 = 64;

struct PublisherTask {
    /// Declared (so dropped) before the store: the store's writer thread may wait
    /// for room in this channel, and dropping the last store handle waits for
    /// that thread.
    announcements: Announcements,
    /// Where to connect, until the connection is opened (in the task: the
    /// network connection starts its own).
    target: Option<BrokerTarget>,
    prefix: String,
    store: Store,
    outbox: Outbox,
    status: BrokerStatus,
    /// The current outage was logged already.
    reported_unreachable: bool,
    /// When the acknowledged watermarks that moved are to be written.
    watermarks_due: Option<Instant>,
    /// From a publish handed to the client to the broker's acknowledgement,
    /// for one acknowledgement in [`ACK_SAMPLE_EVERY`] (the exporter keeps
    /// every sample until its upkeep), counted in `acks`.
    to_broker: metrics::Histogram,
    acks: u64,
    /// Signals to publish (QoS 0) between messages.
    signals: mpsc::Receiver<OutgoingSignal>,
    /// Signals taken but not handed to the broker.
    signals_dropped: metrics::Counter,
}

/// Why publishing on a connection ended.
enum Ended {
    /// The connection reported its loss.
    Lost(String),
    /// The publisher could not go on (a read of the store, a publish refused):
    /// it starts over on a new connection.
    Failed(String),
    /// The connection cannot be made again (an in-process link that ended).
    LinkGone,
    /// The store is gone: the service is stopping.
    NoMoreAnnouncements,
}

impl PublisherTask {
    /// Publishes until the service stops, then persists the acknowledged
    /// watermarks, last: a restart then re-publishes nothing the broker had.
    async fn run_until(mut self, stopping: CancellationToken) {
        tokio::select! {
            () = self.run() => {}
            () = stopping.cancelled() => {}
        }
        self.persist_watermarks();
    }

    async fn run(&mut self) {
        let connection = self
            .target
            .take()
            .and_then(|target| link::open(target, IN_FLIGHT));
        let Some(mut connection) = connection else {
            return self.gone_for_good().await;
        };
        loop {
            let ended = self.serve(&mut connection).await;
            self.persist_watermarks();
            match ended {
                Ended::NoMoreAnnouncements => return,
                Ended::LinkGone => return self.gone_for_good().await,
                Ended::Lost(reason) => self.report_disconnection(&reason),
                Ended::Failed(reason) => {
                    self.report_disconnection(&reason);
                    connection.restart();
                }
            }
        }
    }

    async fn gone_for_good(&mut self) {
        log::error!("the broker link is gone for good; messages stay in the outbox");
        self.note_stored_until_stopped().await;
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

    async fn serve(&mut self, connection: &mut Connection) -> Ended {
        if let Err(ended) = self.wait_for_connack(connection).await {
            return ended;
        }
        log::info!(
            "connected to the MQTT broker; {} messages in the outbox",
            self.outbox.depth()
        );
        self.status.set(true);
        self.reported_unreachable = false;
        self.outbox.start_connection();
        if let Err(ended) = self.publish_backlog(connection).await {
            return ended;
        }
        self.forward_live(connection).await
    }

    /// Waits for the next connection, noting what is stored meanwhile (the
    /// store holds the messages; only their ids matter here).
    async fn wait_for_connack(&mut self, connection: &mut Connection) -> Result<(), Ended> {
        loop {
            tokio::select! {
                event = connection.recv() => match event {
                    Some(LinkEvent::Connected) => return Ok(()),
                    Some(LinkEvent::Lost(reason)) => self.report_disconnection(&reason),
                    // Of the connection given up on (see `Ended::Failed`).
                    Some(LinkEvent::PacketId(_) | LinkEvent::Acknowledged(_)) => {}
                    None => return Err(Ended::LinkGone),
                },
                announced = self.announcements.recv() => {
                    let Some(batch) = announced else {
                        return Err(Ended::NoMoreAnnouncements);
                    };
                    self.note_stored(batch);
                }
                // Taken while there is no connection: it could only wait.
                Some(_) = self.signals.recv() => self.signals_dropped.increment(1),
            }
        }
    }

    /// Everything stored but not acknowledged, channel by channel, in id order.
    async fn publish_backlog(&mut self, connection: &mut Connection) -> Result<(), Ended> {
        let backlog = self.outbox.backlog();
        if backlog.is_empty() {
            return Ok(());
        }
        for (channel, last_stored) in backlog {
            self.publish_from_store(connection, channel, last_stored)
                .await?;
        }
        Ok(())
    }

    async fn forward_live(&mut self, connection: &mut Connection) -> Ended {
        let mut received_events = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                received = connection.recv_many(&mut received_events, BATCH) => {
                    if received == 0 {
                        return Ended::LinkGone;
                    }
                    if let Err(ended) = self.on_events(received_events.drain(..)) {
                        return ended;
                    }
                }
                announced = self.announcements.recv() => {
                    let Some(batch) = announced else {
                        return Ended::NoMoreAnnouncements;
                    };
                    if let Err(ended) = self.publish_stored(connection, batch).await {
                        return ended;
                    }
                }
                Some(signal) = self.signals.recv() => self.publish_signal(connection, signal).await,
                () = sleep_until(self.watermarks_due) => self.persist_watermarks(),
            }
        }
    }

    fn on_events(&mut self, events: impl Iterator<Item = LinkEvent>) -> Result<(), Ended> {
        for event in events {
            match event {
                LinkEvent::PacketId(packet_id) => self.outbox.packet_id_assigned(packet_id),
                LinkEvent::Acknowledged(packet_id) => {
                    let took = self.outbox.acknowledged(packet_id);
                    self.acks = self.acks.wrapping_add(1);
                    if let Some(took) = took.filter(|_| self.acks % ACK_SAMPLE_EVERY == 1) {
                        self.to_broker.record(took.as_secs_f64());
                    }
                }
                LinkEvent::Lost(reason) => return Err(Ended::Lost(reason)),
                LinkEvent::Connected => {}
            }
        }
        self.schedule_watermarks();
        Ok(())
    }

    /// Persists moved watermarks once [`WATERMARK_INTERVAL`] has passed since
    /// the first of them moved (also when acknowledgements never pause long
    /// enough for the timer in [`PublisherTask::forward_live`] to fire).
    fn schedule_watermarks(&mut self) {
        if !self.outbox.has_moved() {
            return;
        }
        match self.watermarks_due {
            None => self.watermarks_due = Some(Instant::now() + WATERMARK_INTERVAL),
            Some(due) if due <= Instant::now() => self.persist_watermarks(),
            Some(_) => {}
        }
    }

    /// Waits for acknowledgements while as many publishes as the broker takes
    /// at once await theirs (also those whose packet id is not known yet: so
    /// rumqttc's request queue, twice as long, never refuses one).
    async fn wait_for_room(&mut self, connection: &mut Connection) -> Result<(), Ended> {
        if self.outbox.in_flight() >= usize::from(IN_FLIGHT) {
            connection.send_held().await.map_err(Ended::Failed)?;
        }
        while self.outbox.in_flight() >= usize::from(IN_FLIGHT) {
            let event = connection.recv().await.ok_or(Ended::LinkGone)?;
            self.on_events(std::iter::once(event))?;
        }
        Ok(())
    }

    /// Publishes a batch of stored messages (already synced). A message right
    /// after the last one sent goes out as announced; one further ahead (the
    /// backlog is still being sent) pulls the missing ids from the store first.
    async fn publish_stored(
        &mut self,
        connection: &mut Connection,
        batch: Vec<Stored>,
    ) -> Result<(), Ended> {
        for stored in batch {
            self.note_one(&stored);
            let sent = self.outbox.sent_through(stored.channel);
            if stored.id == sent + 1 {
                self.publish(connection, stored.channel, stored.id, stored.json)
                    .await?;
            } else if stored.id > sent {
                self.publish_from_store(connection, stored.channel, stored.id)
                    .await?;
            }
        }
        connection.send_held().await.map_err(Ended::Failed)
    }

    /// Publishes the channel's stored messages after the last one sent, up to `target`.
    async fn publish_from_store(
        &mut self,
        connection: &mut Connection,
        channel: ChannelId,
        target: u64,
    ) -> Result<(), Ended> {
        loop {
            let after = self.outbox.sent_through(channel);
            if after >= target {
                return Ok(());
            }
            let page = read_outbox_page(self.store.clone(), channel, after).await?;
            let short = page.len() < BATCH;
            for (id, json) in page.into_iter().take_while(|(id, _)| *id <= target) {
                self.publish(connection, channel, id, json).await?;
            }
            connection.send_held().await.map_err(Ended::Failed)?;
            if short {
                return Ok(());
            }
        }
    }

    async fn publish(
        &mut self,
        connection: &mut Connection,
        channel: ChannelId,
        id: u64,
        json: Bytes,
    ) -> Result<(), Ended> {
        self.wait_for_room(connection).await?;
        let topic = topic::channel_topic(&self.prefix, channel);
        let packet_id = connection
            .publish(topic, json)
            .await
            .map_err(Ended::Failed)?;
        self.outbox.sent(channel, id);
        if let Some(packet_id) = packet_id {
            self.outbox.packet_id_assigned(packet_id);
        }
        Ok(())
    }

    /// Publishes a signal at QoS 0. One that cannot go out is dropped and
    /// counted: a signal never ends a connection, and is never sent again.
    async fn publish_signal(&mut self, connection: &mut Connection, signal: OutgoingSignal) {
        let topic = topic::signals_topic(&self.prefix, signal.channel);
        if let Err(e) = connection.publish_signal(topic, signal.json).await {
            log::debug!("dropping a signal of {}: {e}", signal.channel);
            self.signals_dropped.increment(1);
        }
    }

    fn note_stored(&mut self, batch: Vec<Stored>) {
        for stored in &batch {
            self.note_one(stored);
        }
    }

    /// Counts a stored message in the outbox. A channel the outbox dropped once
    /// everything in it was acknowledged resumes from its persisted watermark.
    fn note_one(&mut self, stored: &Stored) {
        let channel = stored.channel;
        if !self.outbox.knows(channel) {
            let acked = self.store.published_through(channel).unwrap_or_else(|e| {
                log::error!("cannot read what the broker acknowledged on {channel}: {e}");
                stored.id.saturating_sub(1)
            });
            self.outbox.resume(channel, acked);
        }
        self.outbox.stored(channel, stored.id);
    }

    /// Writes every watermark that moved; a channel whose every message is
    /// acknowledged is then dropped from memory (it resumes from what is written).
    fn persist_watermarks(&mut self) {
        self.watermarks_due = None;
        if let Err(e) = self.store.record_published(self.outbox.take_moved()) {
            log::warn!(
                "cannot record what the broker acknowledged ({e}): it is published again after a restart"
            );
        }
    }

    /// With no broker left to reach: keeps counting what is stored (the outbox
    /// depth `/readyz` reports) until the service stops.
    async fn note_stored_until_stopped(&mut self) {
        self.status.set(false);
        while let Some(batch) = self.announcements.recv().await {
            self.note_stored(batch);
        }
    }
}

/// Waits until `due`, or forever when nothing is due.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Up to a page of the channel's stored messages after `after`, read on the
/// blocking pool: the read may wait for the disk.
async fn read_outbox_page(
    store: Store,
    channel: ChannelId,
    after: u64,
) -> Result<Vec<(u64, Bytes)>, Ended> {
    let read = tokio::task::spawn_blocking(move || store.synced().after_raw(channel, after, BATCH));
    match read.await {
        Ok(Ok(page)) => Ok(page),
        Ok(Err(e)) => Err(Ended::Failed(format!("cannot read the outbox: {e}"))),
        Err(e) => Err(Ended::Failed(format!(
            "the outbox read did not finish: {e}"
        ))),
    }
}
