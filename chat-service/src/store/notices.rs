//! Notices of new synced ids, for a reader of the log that must never hold up
//! the writer (the webhooks' dispatcher).
//!
//! After each successful sync the writer sends, per channel of the batch, the
//! last id it stored, with `try_send` on a bounded channel. When the channel is
//! full the notice is dropped and a flag is raised instead: the reader then
//! compares the store's last ids with its own cursors (a rescan). Memory stays
//! bounded whatever the reader's backlog, and nothing is missed, because the
//! notice only says where to look: the messages are read from the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use protocol::ChannelId;
use tokio::sync::mpsc;

use super::Stored;

/// Per channel, the last id of a synced batch.
pub type Notice = Vec<(ChannelId, u64)>;

/// The writer's side: where notices go, once someone listens.
#[derive(Default)]
pub(crate) struct Notices {
    listener: OnceLock<mpsc::Sender<Notice>>,
    /// A notice was dropped since the listener last looked.
    missed: Arc<AtomicBool>,
}

/// The reader's side of [`Notices`].
pub struct NoticeReceiver {
    pub notices: mpsc::Receiver<Notice>,
    missed: Arc<AtomicBool>,
}

impl NoticeReceiver {
    /// Whether a notice was dropped since the last call: the reader must look
    /// at the store's last ids itself.
    pub fn take_missed(&self) -> bool {
        self.missed.swap(false, Ordering::AcqRel)
    }
}

impl Notices {
    /// Starts sending notices to a new receiver, which holds at most
    /// `capacity` of them; `None` if a listener was set already (there is one).
    pub fn listen(&self, capacity: usize) -> Option<NoticeReceiver> {
        let (sender, notices) = mpsc::channel(capacity.max(1));
        self.listener.set(sender).ok()?;
        Some(NoticeReceiver {
            notices,
            missed: self.missed.clone(),
        })
    }

    /// Tells the listener, if any, the last id of each channel in `synced`
    /// (in id order per channel), without ever waiting.
    pub fn synced(&self, synced: &[Stored]) {
        let Some(listener) = self.listener.get() else {
            return;
        };
        if synced.is_empty() {
            return;
        }
        let mut last: HashMap<ChannelId, u64> = HashMap::new();
        for stored in synced {
            last.insert(stored.channel, stored.id);
        }
        if listener.try_send(last.into_iter().collect()).is_err() {
            self.missed.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn stored(channel: u8, id: u64) -> Stored {
        let channel = ChannelId::from_bytes([channel; 16]);
        let json = Bytes::from_static(b"{}");
        Stored { channel, id, json }
    }

    #[test]
    fn a_notice_names_the_last_id_per_channel_and_a_full_queue_raises_the_flag() {
        let notices = Notices::default();
        notices.synced(&[stored(1, 1)]);
        let mut receiver = notices.listen(1).expect("first listener");
        assert!(notices.listen(1).is_none(), "one listener");
        notices.synced(&[stored(1, 2), stored(2, 1), stored(1, 3)]);
        notices.synced(&[stored(1, 4)]);
        let mut notice = receiver.notices.try_recv().expect("a notice");
        notice.sort_by_key(|(channel, _)| *channel.as_bytes());
        let ids: Vec<u64> = notice.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids, [3, 1]);
        assert!(receiver.take_missed(), "the second did not fit");
        assert!(!receiver.take_missed(), "the flag is taken once");
    }
}
