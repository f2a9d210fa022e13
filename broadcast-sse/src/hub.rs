//! The per-channel fan-out hub.
//!
//! Each channel with local listeners has a ring ([`broadcast`]) of SSE frames: a
//! delivery is one write into the ring and a wake-up per listener, whatever their
//! number, and a listener that falls behind the ring learns it (`Lagged`) instead of
//! holding the others back. Next to the ring the channel keeps its most recent
//! `ring_size` frames (refcounted, so a pointer each) to serve resumes and lagging
//! listeners without asking history; the ring itself is half that size, so a
//! listener that overruns it usually finds what it missed there.
//!
//! The hub delivers a channel's ids in order with no hole: a live frame that skips
//! ids is held back while a backfill ([`backfill`]) reads the missing ones
//! from history, and after a broker reconnect every channel is backfilled from its
//! last delivered id. The hub also decides when the node subscribes to a channel's
//! topic (first listener) and unsubscribes (last listener gone).
//!
//! Signals (typing, read markers) have no id: each channel passes them on
//! through a small ring of their own ([`Hub::deliver_signal`]), never held,
//! never kept in the recent buffer, never replayed.

pub mod backfill;
mod channel;
mod shards;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use protocol::{ChannelId, Kind, Message};
use server::tasks::Background;
use tokio::sync::{Semaphore, broadcast, mpsc, watch};

use channel::{Arrival, ChannelEntry};
pub use channel::{HELD_MAX, Recent, SIGNAL_RING, Step};
use shards::Shards;

use crate::history::HistorySource;

/// Backfills reading history at the same time; the others wait their turn.
pub const BACKFILL_CONCURRENCY: usize = 4;

/// Slots of a channel's live ring. tokio allocates them all up front (about 64
/// bytes each), so a large ring costs tens of KB per followed channel even when
/// idle; a listener that overruns this one is caught up from the recent buffer,
/// which grows only as messages arrive.
const MAX_LIVE_RING: usize = 16;

/// The live ring for a recent buffer of `ring_size`: half of it (so a listener
/// that overruns the ring usually finds what it missed in the buffer), at most
/// [`MAX_LIVE_RING`].
fn live_ring_for(ring_size: usize) -> usize {
    (ring_size / 2).clamp(1, MAX_LIVE_RING)
}

/// One message framed for SSE, shared by every listener (cloning is a refcount).
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: u64,
    pub bytes: Bytes,
    /// When this node made it (received it from the broker, or read it from
    /// history): where its time on the node starts.
    pub made: Instant,
}

impl Frame {
    pub fn from_message(message: &Message) -> Self {
        Frame {
            id: message.id,
            bytes: Bytes::from(message.sse_frame()),
            made: Instant::now(),
        }
    }

    /// The frame of log entry `id` (of `kind`) as `json` carries it, copied as it is: the
    /// store's serialisation is the one every socket gets. JSON spread over
    /// several lines (not what the chat-service writes, but valid on the
    /// topic) is put on one line first, as one `data:` field needs.
    pub fn from_json(id: u64, kind: Kind, json: &[u8]) -> Self {
        let one_line = if json.iter().any(|&byte| byte == b'\n' || byte == b'\r') {
            serde_json::from_slice::<Message>(json)
                .and_then(|message| serde_json::to_vec(&message))
                .map(std::borrow::Cow::Owned)
                .unwrap_or(std::borrow::Cow::Borrowed(json))
        } else {
            std::borrow::Cow::Borrowed(json)
        };
        Frame {
            id,
            bytes: Bytes::from(protocol::message::sse_frame_of(id, kind, &one_line)),
            made: Instant::now(),
        }
    }
}

/// What the hub asks of the broker connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionChange {
    Subscribe(ChannelId),
    Unsubscribe(ChannelId),
}

/// Cheap-to-clone handle shared by the HTTP workers, the MQTT task and backfills.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    /// The followed channels, under one lock per shard: no lock is shared by
    /// all channels on the delivery path.
    channels: Shards,
    changes: mpsc::UnboundedSender<SubscriptionChange>,
    ring_size: usize,
    /// Slots of each channel's live ring.
    live_ring: usize,
    /// Where backfills read the ids a gap or an outage left out.
    history: Arc<dyn HistorySource>,
    /// Where backfills run (none: they are abandoned, as in a hub without a
    /// runtime).
    background: Option<Background>,
    permits: Semaphore,
    /// Backfills started and not yet finished (also those waiting for a permit).
    backfills: watch::Sender<usize>,
    epochs: AtomicU64,
    signals: watch::Sender<Signals>,
}

/// What every open stream listens for besides its channel: heartbeat ticks and
/// the node's stop. One watch for both, so a waiting stream registers once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals {
    pub beats: u64,
    pub shutting_down: bool,
}

/// A listener's place in a channel: its ring receiver, the subscription state, and
/// where it starts. Dropping it leaves the channel.
pub struct Membership {
    pub ring: broadcast::Receiver<Frame>,
    /// The channel's signals, from the moment of joining.
    pub signals: broadcast::Receiver<Bytes>,
    pub subscribed: watch::Receiver<bool>,
    /// The last id this node delivered before the listener joined, if any.
    pub last_id_at_join: Option<u64>,
    pub guard: ListenerGuard,
}

/// Removes a listener from its channel when dropped.
pub struct ListenerGuard {
    hub: Hub,
    channel: ChannelId,
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.hub.leave(self.channel);
    }
}

impl Hub {
    /// A hub that backfills gaps and heals reconnects from `history`, and the
    /// receiving end of its subscription changes (for the MQTT task).
    pub fn new(
        ring_size: usize,
        history: Arc<dyn HistorySource>,
        backfills: Option<Background>,
    ) -> (Hub, mpsc::UnboundedReceiver<SubscriptionChange>) {
        Self::build(ring_size, live_ring_for(ring_size), history, backfills)
    }

    /// Like [`Hub::new`] with a live ring of half of `ring_size`, however
    /// large, for tests that read many frames straight from the ring.
    #[cfg(test)]
    pub fn with_history_and_large_ring(
        ring_size: usize,
        history: Arc<dyn HistorySource>,
    ) -> (Hub, mpsc::UnboundedReceiver<SubscriptionChange>) {
        let backfills = Background::on_current_runtime();
        Self::build(ring_size, (ring_size / 2).max(1), history, backfills)
    }

    fn build(
        ring_size: usize,
        live_ring: usize,
        history: Arc<dyn HistorySource>,
        backfills: Option<Background>,
    ) -> (Hub, mpsc::UnboundedReceiver<SubscriptionChange>) {
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let hub = Hub {
            inner: Arc::new(Inner {
                channels: Shards::new(),
                changes,
                ring_size: ring_size.max(1),
                live_ring,
                history,
                background: backfills,
                permits: Semaphore::new(BACKFILL_CONCURRENCY),
                backfills: watch::Sender::new(0),
                epochs: AtomicU64::new(0),
                signals: watch::Sender::new(Signals::default()),
            }),
        };
        (hub, changes_rx)
    }

    /// Adds a listener; the first listener of a channel subscribes the node to it.
    pub fn join(&self, channel: ChannelId) -> Membership {
        let mut channels = self.inner.channels.of(channel);
        let entry = channels.entry(channel).or_insert_with(|| {
            self.inner.channels.added();
            self.request(SubscriptionChange::Subscribe(channel));
            let epoch = self.inner.epochs.fetch_add(1, Ordering::Relaxed);
            ChannelEntry::new(self.inner.live_ring, self.inner.ring_size, epoch)
        });
        entry.listeners += 1;
        Membership {
            ring: entry.ring.subscribe(),
            signals: entry.signals.subscribe(),
            subscribed: entry.subscribed.subscribe(),
            last_id_at_join: entry.last_id(),
            guard: ListenerGuard {
                hub: self.clone(),
                channel,
            },
        }
    }

    /// Whether one more listener on `channel` would make the node follow more than
    /// `max` channels (0: no limit).
    pub fn would_exceed(&self, channel: ChannelId, max: usize) -> bool {
        max > 0
            && !self.inner.channels.of(channel).contains_key(&channel)
            && self.inner.channels.count() >= max
    }

    fn leave(&self, channel: ChannelId) {
        let mut channels = self.inner.channels.of(channel);
        let Some(entry) = channels.get_mut(&channel) else {
            return;
        };
        entry.listeners = entry.listeners.saturating_sub(1);
        if entry.listeners == 0 {
            channels.remove(&channel);
            self.inner.channels.removed();
            self.request(SubscriptionChange::Unsubscribe(channel));
        }
    }

    /// Hands a frame from the broker to the channel's listeners. Frames for channels
    /// nobody here listens to, and ids already delivered, are dropped; a frame that
    /// skips ids waits for a backfill of the missing ones.
    pub fn deliver(&self, channel: ChannelId, frame: Frame) {
        let gap_epoch = {
            let mut channels = self.inner.channels.of(channel);
            let Some(entry) = channels.get_mut(&channel) else {
                return;
            };
            match entry.receive_live(frame) {
                Arrival::GapFound => Some(entry.epoch),
                Arrival::Delivered | Arrival::Duplicate | Arrival::Held => None,
            }
        };
        if let Some(epoch) = gap_epoch {
            self.spawn_backfill(channel, epoch);
        }
    }

    /// Hands a signal (a complete `event: signal`, no `id:`) to the channel's
    /// listeners as it is: no order to keep, nothing to hold or remember.
    /// Signals of channels nobody here listens to are dropped.
    pub fn deliver_signal(&self, channel: ChannelId, event: Bytes) {
        let channels = self.inner.channels.of(channel);
        let Some(entry) = channels.get(&channel) else {
            return;
        };
        // An error only means no receiver is left right now.
        if entry.signals.send(event).is_ok() {
            crate::metrics::signal_delivered();
        }
    }

    /// Delivered frames after `after`, from memory, when the buffer reaches back.
    pub fn recent_after(&self, channel: ChannelId, after: u64, limit: usize) -> Recent {
        match self.inner.channels.of(channel).get(&channel) {
            Some(entry) => entry.recent_after(after, limit),
            None => Recent::Missing,
        }
    }

    /// The first id delivered to a channel since its entry was created: where a
    /// listener that joined before any delivery must catch up from.
    pub fn first_id(&self, channel: ChannelId) -> Option<u64> {
        let channels = self.inner.channels.of(channel);
        channels.get(&channel).and_then(ChannelEntry::first_id)
    }

    /// The last id delivered to a channel, if any.
    pub fn last_id(&self, channel: ChannelId) -> Option<u64> {
        let channels = self.inner.channels.of(channel);
        channels.get(&channel).and_then(ChannelEntry::last_id)
    }

    /// Records that the broker acknowledged the subscription to these channels.
    pub fn mark_subscribed(&self, channels: &[ChannelId]) {
        for channel in channels {
            if let Some(entry) = self.inner.channels.of(*channel).get(channel) {
                entry.subscribed.send_replace(true);
            }
        }
    }

    /// After the broker connection is lost, every subscription must be made again.
    pub fn mark_all_unsubscribed(&self) {
        for shard in self.inner.channels.all() {
            for entry in shard.values() {
                entry.subscribed.send_replace(false);
            }
        }
    }

    /// Channels with local listeners, to re-subscribe after a reconnect.
    pub fn active_channels(&self) -> Vec<ChannelId> {
        let shards = self.inner.channels.all();
        shards
            .flat_map(|shard| shard.keys().copied().collect::<Vec<_>>())
            .collect()
    }

    /// Channels this node follows (with listeners or a backfill).
    pub fn channel_count(&self) -> usize {
        self.inner.channels.count()
    }

    pub fn listener_count(&self) -> usize {
        let shards = self.inner.channels.all();
        shards
            .map(|shard| shard.values().map(|entry| entry.listeners).sum::<usize>())
            .sum()
    }

    /// Backfills started and not finished yet (for `/readyz`).
    pub fn backfills_in_progress(&self) -> usize {
        *self.inner.backfills.borrow()
    }

    /// Follows [`Hub::backfills_in_progress`] as it changes.
    pub fn backfill_count(&self) -> watch::Receiver<usize> {
        self.inner.backfills.subscribe()
    }

    /// Ticks every stream's heartbeat (one timer for the whole node).
    pub fn beat(&self) {
        self.inner
            .signals
            .send_modify(|signals| signals.beats = signals.beats.wrapping_add(1));
    }

    /// Ends every open stream (graceful stop): clients reconnect elsewhere.
    pub fn shut_down(&self) {
        self.inner
            .signals
            .send_modify(|signals| signals.shutting_down = true);
    }

    /// Follows the heartbeat ticks and the stop.
    pub fn signals(&self) -> watch::Receiver<Signals> {
        self.inner.signals.subscribe()
    }

    fn request(&self, change: SubscriptionChange) {
        if self.inner.changes.send(change).is_err() {
            log::error!("MQTT task has stopped; cannot apply {change:?}");
        }
    }
}

#[cfg(test)]
mod tests;
