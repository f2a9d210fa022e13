//! Which stored messages a reader may see: only those a crash cannot take back.
//!
//! The writer inserts a batch into sled's tree, then syncs it. Between the two,
//! the tree holds messages that a crash of the process or of the OS can undo,
//! and whose ids a restart would give to other messages; a reader that saw one
//! would hand a stream an id that later names something else, and the stream
//! would drop the second message as a duplicate. So before it inserts a durable
//! write the writer *holds* each channel it touches at the first id of the
//! write, and releases every hold once a sync succeeds. A read is capped below
//! its channel's hold.
//!
//! The order is what makes it sound: a hold is taken before the insert and
//! released after the sync, so a reader that looks at the holds *after* it read
//! the tree finds the hold of every unsynced message it read (or that message
//! is synced by then). [`SyncedHistory`](super::reads::SyncedHistory) reads the
//! tree first and asks [`Unsynced::readable_through`] after; no other read
//! reaches the messages tree.

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use protocol::ChannelId;

/// Per channel, the first id written but not synced yet.
#[derive(Default)]
pub(crate) struct Unsynced {
    /// A std lock: held for a map lookup or update, never across an `.await`
    /// nor a sled call.
    first: RwLock<HashMap<ChannelId, u64>>,
    /// Tests hold the writer before each sync with it (see [`SyncGate`]).
    #[cfg(test)]
    gate: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// Holds every sync of the writer until [`SyncGate::allow_one`], or until the
/// gate is dropped: how a test looks into the window between write and sync.
#[cfg(test)]
pub(crate) struct SyncGate(std::sync::mpsc::Sender<()>);

#[cfg(test)]
impl SyncGate {
    pub fn allow_one(&self) {
        let _ = self.0.send(());
    }
}

#[cfg(test)]
impl Unsynced {
    pub fn gate_syncs(&self) -> SyncGate {
        let (allow, allowed) = std::sync::mpsc::channel();
        *self.gate.lock().expect("gate") = Some(allowed);
        SyncGate(allow)
    }

    /// Called by the writer before each sync.
    pub fn wait_for_sync(&self) {
        if let Some(allowed) = &*self.gate.lock().expect("gate") {
            let _ = allowed.recv();
        }
    }
}

impl Unsynced {
    /// The highest id of `channel` that is synced (`u64::MAX` when nothing of
    /// the channel waits for a sync). Ask after reading the tree, never before.
    pub fn readable_through(&self, channel: ChannelId) -> u64 {
        let first = self.read();
        if first.is_empty() {
            return u64::MAX;
        }
        first
            .get(&channel)
            .map_or(u64::MAX, |first| first.saturating_sub(1))
    }

    /// Hides `ids` (channel and id, in id order per channel) from readers until
    /// the next successful sync. Called by the writer before it inserts them.
    pub fn hold(&self, ids: impl IntoIterator<Item = (ChannelId, u64)>) {
        let mut ids = ids.into_iter().peekable();
        if ids.peek().is_none() {
            return;
        }
        let mut first = self.write();
        for (channel, id) in ids {
            // An earlier, failed sync may hold the channel at a lower id already.
            first.entry(channel).or_insert(id);
        }
    }

    /// Everything written so far is synced: readers may see all of it.
    pub fn release_all(&self) {
        let mut first = self.write();
        if !first.is_empty() {
            first.clear();
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<ChannelId, u64>> {
        // Every update is one map operation: a panic cannot leave it half done.
        self.first
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<ChannelId, u64>> {
        self.first
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(n: u8) -> ChannelId {
        ChannelId::from_bytes([n; 16])
    }

    #[test]
    fn a_held_channel_is_readable_below_its_first_unsynced_id_only() {
        let unsynced = Unsynced::default();
        assert_eq!(unsynced.readable_through(channel(1)), u64::MAX);
        unsynced.hold([(channel(1), 5), (channel(1), 6), (channel(2), 1)]);
        assert_eq!(unsynced.readable_through(channel(1)), 4);
        assert_eq!(unsynced.readable_through(channel(2)), 0);
        assert_eq!(unsynced.readable_through(channel(3)), u64::MAX);
        unsynced.release_all();
        assert_eq!(unsynced.readable_through(channel(1)), u64::MAX);
    }

    #[test]
    fn a_hold_left_by_a_failed_sync_keeps_its_lower_id() {
        let unsynced = Unsynced::default();
        unsynced.hold([(channel(1), 5)]);
        unsynced.hold([(channel(1), 9)]);
        assert_eq!(unsynced.readable_through(channel(1)), 4);
    }
}
