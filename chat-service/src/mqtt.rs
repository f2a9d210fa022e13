//! The publisher: owns the chat-service's broker connection and drains the outbox.
//!
//! Stored messages are announced here in id order (see
//! [`crate::history::History::append`]) and reach the publisher task from the
//! store's flush thread once the flush that covers them has written them to the
//! file (before its sync), so a subscriber never sees an id that a restart could
//! hand out again. Each broker connection is
//! fresh (a new rumqttc client over the network; see [`crate::broker_link`] for
//! the all-in-one's in-process link): when it drops, nothing is left in a client
//! queue to be lost or sent twice — the next connection first re-publishes, from
//! the store and in id order, every message the broker did not acknowledge (the
//! outbox), then goes on with live messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use protocol::mqtt::BrokerStatus;
use protocol::{ChannelId, topic};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::broker_link::{BrokerTarget, Connection, Connector, LinkEvent};
use crate::feed::Sink;
use crate::history::{FlushError, History};
use crate::outbox::Outbox;

/// Most notices taken per disk flush, and messages read per outbox page.
const BATCH: usize = 256;
/// Pause between reconnect attempts while the broker is unreachable.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
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
    history: History,
    /// Streams in this process, fed without the broker.
    feed: Option<Arc<Sink>>,
    status: BrokerStatus,
    outbox_depth: Arc<AtomicU64>,
}

impl Publisher {
    /// Announces a stored message; never waits. Call right after it is stored,
    /// in id order per channel. Once it is written to the file (so a restart
    /// cannot hand its id out again), the flush thread hands it to the feed, if
    /// any, and to the publisher task (to nobody if the write failed); its POST's
    /// answer still waits for the sync.
    pub fn enqueue(&self, channel: ChannelId, id: u64, json: Bytes) {
        let notices = self.notices.clone();
        let feed = self.feed.clone();
        let stored = Stored { channel, id, json };
        let queued = self.history.after_write(Box::new(move |written| {
            announce(written, feed.as_deref(), &notices, stored);
        }));
        if queued.is_err() {
            log::error!(
                "the store's flush thread has stopped; {channel} #{id} stays in the outbox"
            );
        }
    }

    /// Also hands every stored message to `sink` (see [`crate::feed`]).
    pub fn feeding(&mut self, sink: Sink) {
        self.feed = Some(Arc::new(sink));
    }

    pub fn status(&self) -> &BrokerStatus {
        &self.status
    }

    /// Stored messages the broker has not acknowledged yet.
    pub fn outbox_depth(&self) -> u64 {
        self.outbox_depth.load(Ordering::Relaxed)
    }
}

/// Hands a message whose write is over to the feed, if any, and to the publisher
/// task; or to nobody when the write failed: a message that may not be in the
/// file must not be seen, since a restart could give its id to another one.
/// Its POST is answered with the same error.
fn announce(
    written: Result<(), FlushError>,
    feed: Option<&Sink>,
    notices: &mpsc::UnboundedSender<Stored>,
    stored: Stored,
) {
    let Stored { channel, id, .. } = stored;
    if let Err(e) = written {
        log::error!("{channel} #{id} is not announced: its write failed: {e}");
        return;
    }
    if let Some(feed) = feed {
        feed(channel, id, stored.json.clone());
    }
    if notices.send(stored).is_err() {
        log::error!("publisher task has stopped; {channel} #{id} stays in the outbox");
    }
}

/// Starts the publisher task, which connects (and reconnects) in the background.
/// The handle ends only if the task panics.
pub fn start(
    broker: BrokerTarget,
    prefix: &str,
    history: History,
) -> Result<(Publisher, JoinHandle<()>), sled::Error> {
    let outbox = Outbox::new(history.last_ids(), &history.published_watermarks()?);
    let (notices, notices_rx) = mpsc::unbounded_channel();
    let status = BrokerStatus::default();
    let publisher = Publisher {
        notices,
        history: history.clone(),
        feed: None,
        status: status.clone(),
        outbox_depth: outbox.depth_gauge(),
    };
    let task = PublisherTask {
        connector: Connector::new(broker, IN_FLIGHT),
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
    connector: Connector,
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
            let Some(mut connection) = self.connector.connect() else {
                log::error!("the broker link is gone for good; messages stay in the outbox");
                return self.note_stored_until_stopped().await;
            };
            let ended = self.serve(&mut connection).await;
            let reason = match ended {
                Ended::NoMoreNotices => return,
                Ended::Lost(reason) => connection.close(reason),
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

    async fn serve(&mut self, connection: &mut Connection) -> Ended {
        if let Err(ended) = self.wait_for_connack(&mut connection.events).await {
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

    async fn wait_for_connack(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<LinkEvent>,
    ) -> Result<(), Ended> {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(LinkEvent::Connected) => return Ok(()),
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
    async fn publish_backlog(&mut self, connection: &mut Connection) -> Result<(), Ended> {
        let backlog = self.outbox.backlog();
        if backlog.is_empty() {
            return Ok(());
        }
        self.flush().await;
        for (channel, _) in backlog {
            self.publish_from_store(connection, channel, u64::MAX)
                .await?;
        }
        Ok(())
    }

    async fn forward_live(&mut self, connection: &mut Connection) -> Ended {
        let mut notices = Vec::with_capacity(BATCH);
        let mut received_events = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                received = connection.events.recv_many(&mut received_events, BATCH) => {
                    if received == 0 {
                        return Ended::Lost("event loop ended".into());
                    }
                    if let Err(ended) = self.on_events(received_events.drain(..)) {
                        return ended;
                    }
                }
                received = self.notices.recv_many(&mut notices, BATCH) => {
                    if received == 0 {
                        return Ended::NoMoreNotices;
                    }
                    if let Err(ended) = self.publish_stored(connection, &mut notices).await {
                        return ended;
                    }
                }
            }
        }
    }

    fn on_events(&mut self, events: impl Iterator<Item = LinkEvent>) -> Result<(), Ended> {
        for event in events {
            match event {
                LinkEvent::PacketId(packet_id) => self.outbox.packet_id_assigned(packet_id),
                LinkEvent::Acknowledged(packet_id) => self.outbox.acknowledged(packet_id),
                LinkEvent::Disconnected => {
                    return Err(Ended::Lost("the broker disconnected".into()));
                }
                LinkEvent::Connected => {}
            }
        }
        self.persist_watermarks();
        Ok(())
    }

    /// Waits for acknowledgements while as many publishes as the broker takes
    /// at once await theirs.
    async fn wait_for_room(&mut self, connection: &mut Connection) -> Result<(), Ended> {
        if self.outbox.in_flight() >= usize::from(IN_FLIGHT) {
            connection.send_held().await.map_err(Ended::Lost)?;
        }
        while self.outbox.in_flight() >= usize::from(IN_FLIGHT) {
            let event = connection.events.recv().await;
            let event = event.ok_or_else(|| Ended::Lost("event loop ended".into()))?;
            self.on_events(std::iter::once(event))?;
        }
        Ok(())
    }

    /// Publishes a batch of stored messages (already written). A message right
    /// after the last one sent goes out as announced; one further ahead (the
    /// backlog is still being sent) pulls the missing ids from the store first.
    async fn publish_stored(
        &mut self,
        connection: &mut Connection,
        batch: &mut Vec<Stored>,
    ) -> Result<(), Ended> {
        for stored in batch.drain(..) {
            self.outbox.stored(stored.channel, stored.id);
            let sent = self.outbox.sent_through(stored.channel);
            if stored.id == sent + 1 {
                self.publish(connection, stored.channel, stored.id, stored.json)
                    .await?;
            } else if stored.id > sent {
                self.publish_from_store(connection, stored.channel, stored.id)
                    .await?;
            }
        }
        connection.send_held().await.map_err(Ended::Lost)
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
            let page = self
                .history
                .after_raw(channel, after, BATCH)
                .map_err(|e| Ended::Lost(format!("cannot read the outbox: {e}")))?;
            let short = page.len() < BATCH;
            for (id, json) in page.into_iter().take_while(|(id, _)| *id <= target) {
                self.publish(connection, channel, id, json).await?;
            }
            connection.send_held().await.map_err(Ended::Lost)?;
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
        let packet_id = connection.publish(topic, json).await.map_err(Ended::Lost)?;
        self.outbox.sent(channel, id);
        if let Some(packet_id) = packet_id {
            self.outbox.packet_id_assigned(packet_id);
        }
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

    /// With no broker left to reach: keeps counting what is stored (the outbox
    /// depth `/readyz` reports) until the service stops.
    async fn note_stored_until_stopped(&mut self) {
        self.status.set(false);
        let mut batch = Vec::with_capacity(BATCH);
        while self.notices.recv_many(&mut batch, BATCH).await > 0 {
            self.note_stored(&mut batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn fed_and_noticed(written: Result<(), FlushError>) -> (Vec<u64>, Vec<u64>) {
        let fed = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&fed);
        let feed: Sink = Box::new(move |_, id, _| seen.lock().expect("lock").push(id));
        let (notices, mut received) = mpsc::unbounded_channel();
        let stored = Stored {
            channel: ChannelId::from_bytes([7; 16]),
            id: 3,
            json: Bytes::from_static(b"{}"),
        };
        announce(written, Some(&feed), &notices, stored);
        let mut noticed = Vec::new();
        while let Ok(stored) = received.try_recv() {
            noticed.push(stored.id);
        }
        let fed = fed.lock().expect("lock").clone();
        (fed, noticed)
    }

    #[test]
    fn a_written_message_reaches_the_feed_and_the_publisher() {
        assert_eq!(fed_and_noticed(Ok(())), (vec![3], vec![3]));
    }

    #[test]
    fn a_message_whose_write_failed_reaches_nobody() {
        let failed = Err(FlushError("disk full".into()));
        assert_eq!(fed_and_noticed(failed), (vec![], vec![]));
    }
}
