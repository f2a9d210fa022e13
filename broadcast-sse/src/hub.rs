//! The per-channel fan-out hub.
//!
//! Each channel with local listeners has a ring ([`broadcast`]) of SSE frames: a
//! delivery is one write into the ring and a wake-up per listener, whatever their
//! number, and a listener that falls behind the ring learns it (`Lagged`) instead of
//! holding the others back. The hub also decides when the node subscribes to a
//! channel's topic (first listener) and unsubscribes (last listener gone).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use protocol::{ChannelId, Message};
use tokio::sync::{broadcast, mpsc, watch};

/// One message framed for SSE, shared by every listener (cloning is a refcount).
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: u64,
    pub bytes: Bytes,
}

impl Frame {
    pub fn from_message(message: &Message) -> Self {
        Frame {
            id: message.id,
            bytes: Bytes::from(message.sse_frame()),
        }
    }
}

/// What the hub asks of the broker connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionChange {
    Subscribe(ChannelId),
    Unsubscribe(ChannelId),
}

/// Cheap-to-clone handle shared by the HTTP workers and the MQTT task.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    /// A std mutex: held for map lookups and a non-blocking ring write, never
    /// across an `.await`.
    channels: Mutex<HashMap<ChannelId, ChannelEntry>>,
    changes: mpsc::UnboundedSender<SubscriptionChange>,
    ring_size: usize,
    heartbeat: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
}

struct ChannelEntry {
    ring: broadcast::Sender<Frame>,
    listeners: usize,
    /// Highest id delivered on this node; older or repeated ids are dropped.
    last_id: Option<u64>,
    /// First id delivered since the entry was created.
    first_id: Option<u64>,
    /// `true` once the broker acknowledged the subscription.
    subscribed: watch::Sender<bool>,
}

/// A listener's place in a channel: its ring receiver, the subscription state, and
/// where it starts. Dropping it leaves the channel.
pub struct Membership {
    pub ring: broadcast::Receiver<Frame>,
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
    /// A hub and the receiving end of its subscription changes (for the MQTT task).
    pub fn new(ring_size: usize) -> (Hub, mpsc::UnboundedReceiver<SubscriptionChange>) {
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let hub = Hub {
            inner: Arc::new(Inner {
                channels: Mutex::new(HashMap::new()),
                changes,
                ring_size: ring_size.max(1),
                heartbeat: watch::Sender::new(0),
                shutdown: watch::Sender::new(false),
            }),
        };
        (hub, changes_rx)
    }

    /// Adds a listener; the first listener of a channel subscribes the node to it.
    pub fn join(&self, channel: ChannelId) -> Membership {
        let mut channels = self.lock();
        let entry = channels.entry(channel).or_insert_with(|| {
            self.request(SubscriptionChange::Subscribe(channel));
            ChannelEntry {
                ring: broadcast::Sender::new(self.inner.ring_size),
                listeners: 0,
                last_id: None,
                first_id: None,
                subscribed: watch::Sender::new(false),
            }
        });
        entry.listeners += 1;
        Membership {
            ring: entry.ring.subscribe(),
            subscribed: entry.subscribed.subscribe(),
            last_id_at_join: entry.last_id,
            guard: ListenerGuard {
                hub: self.clone(),
                channel,
            },
        }
    }

    fn leave(&self, channel: ChannelId) {
        let mut channels = self.lock();
        let Some(entry) = channels.get_mut(&channel) else {
            return;
        };
        entry.listeners = entry.listeners.saturating_sub(1);
        if entry.listeners == 0 {
            channels.remove(&channel);
            self.request(SubscriptionChange::Unsubscribe(channel));
        }
    }

    /// Hands a frame from the broker to the channel's listeners. Frames for channels
    /// nobody here listens to, and ids already delivered, are dropped.
    pub fn deliver(&self, channel: ChannelId, frame: Frame) {
        let mut channels = self.lock();
        let Some(entry) = channels.get_mut(&channel) else {
            return;
        };
        if entry.last_id.is_some_and(|last| frame.id <= last) {
            return;
        }
        entry.last_id = Some(frame.id);
        entry.first_id.get_or_insert(frame.id);
        // An error only means no receiver is left right now.
        let _ = entry.ring.send(frame);
    }

    /// The first id delivered to a channel since its entry was created: where a
    /// listener that joined before any delivery must catch up from.
    pub fn first_id(&self, channel: ChannelId) -> Option<u64> {
        self.lock().get(&channel).and_then(|entry| entry.first_id)
    }

    /// Records that the broker acknowledged the subscription to these channels.
    pub fn mark_subscribed(&self, channels: &[ChannelId]) {
        let entries = self.lock();
        for channel in channels {
            if let Some(entry) = entries.get(channel) {
                entry.subscribed.send_replace(true);
            }
        }
    }

    /// After the broker connection is lost, every subscription must be made again.
    pub fn mark_all_unsubscribed(&self) {
        for entry in self.lock().values() {
            entry.subscribed.send_replace(false);
        }
    }

    /// Channels with local listeners, to re-subscribe after a reconnect.
    pub fn active_channels(&self) -> Vec<ChannelId> {
        self.lock().keys().copied().collect()
    }

    pub fn listener_count(&self) -> usize {
        self.lock().values().map(|entry| entry.listeners).sum()
    }

    /// Ticks every stream's heartbeat (one timer for the whole node).
    pub fn beat(&self) {
        self.inner
            .heartbeat
            .send_modify(|tick| *tick = tick.wrapping_add(1));
    }

    pub fn heartbeats(&self) -> watch::Receiver<u64> {
        self.inner.heartbeat.subscribe()
    }

    /// Ends every open stream (graceful stop): clients reconnect elsewhere.
    pub fn shut_down(&self) {
        self.inner.shutdown.send_replace(true);
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    fn request(&self, change: SubscriptionChange) {
        if self.inner.changes.send(change).is_err() {
            log::error!("MQTT task has stopped; cannot apply {change:?}");
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ChannelId, ChannelEntry>> {
        // Entries are updated field by field with no invariant spanning a panic.
        self.inner
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u64) -> Frame {
        Frame {
            id,
            bytes: Bytes::from(format!("id: {id}\n\n")),
        }
    }

    #[test]
    fn first_join_subscribes_and_last_leave_unsubscribes() {
        let (hub, mut changes) = Hub::new(8);
        let channel = ChannelId::from_bytes([1; 16]);
        let first = hub.join(channel);
        let second = hub.join(channel);
        assert_eq!(
            changes.try_recv().ok(),
            Some(SubscriptionChange::Subscribe(channel))
        );
        assert!(
            changes.try_recv().is_err(),
            "second listener does not subscribe again"
        );
        drop(first);
        assert!(changes.try_recv().is_err(), "a listener remains");
        drop(second);
        assert_eq!(
            changes.try_recv().ok(),
            Some(SubscriptionChange::Unsubscribe(channel))
        );
        assert!(hub.active_channels().is_empty());
    }

    #[test]
    fn deliver_drops_repeated_ids_and_shares_bytes() {
        let (hub, _changes) = Hub::new(8);
        let channel = ChannelId::from_bytes([1; 16]);
        let mut member = hub.join(channel);
        hub.deliver(channel, frame(1));
        hub.deliver(channel, frame(1));
        hub.deliver(channel, frame(2));
        let ids: Vec<u64> = std::iter::from_fn(|| member.ring.try_recv().ok())
            .map(|f| f.id)
            .collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(hub.first_id(channel), Some(1));
        assert_eq!(hub.join(channel).last_id_at_join, Some(2));
    }
}
