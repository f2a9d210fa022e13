//! Group commit: after each write, the writer thread syncs once for every
//! request it took, answers those that wait for the disk, and then announces
//! the write's messages to the publisher. Only one flush is ever in flight
//! (sled 0.34's `flush_async` deadlocks its own thread pool when many run at
//! once), and the announcement is a send on a bounded channel that another
//! task consumes; the webhooks get a notice of the new ids that never waits
//! ([`super::notices`]).
//!
//! A message is announced, answered as durable and readable (its hold in
//! [`Unsynced`] released) only once it is synced, so no subscriber and no
//! reader ever sees an id that a restart could give to another message.

use std::time::Instant;

use tokio::sync::mpsc;

use super::notices::Notices;
use super::unsynced::Unsynced;
use super::writer::{ChangeReply, Reply};
use super::{Appended, StoreError, Stored};

/// A batch the writer made: its messages, the requests waiting for the disk
/// with their answers, and the changes to answer once synced.
#[derive(Default)]
pub(super) struct Written {
    pub stored: Vec<Stored>,
    pub waiters: Vec<(Reply, Vec<Appended>)>,
    pub changes: Vec<(ChangeReply, Result<u64, StoreError>)>,
}

impl Written {
    /// Nothing to sync, answer or announce.
    pub fn is_empty(&self) -> bool {
        self.stored.is_empty() && self.waiters.is_empty() && self.changes.is_empty()
    }
}

/// Syncs a written batch, lets readers see it, answers its waiting requests
/// and announces its messages. After a failed sync, what the writer holds
/// stays hidden until a later sync succeeds.
pub(super) fn sync(
    db: &sled::Db,
    written: Written,
    announce: &mpsc::Sender<Vec<Stored>>,
    notices: &Notices,
    unsynced: &Unsynced,
    sync_duration: &metrics::Histogram,
) {
    #[cfg(test)]
    unsynced.wait_for_sync();
    let started = Instant::now();
    let outcome = db.flush().map(drop).map_err(|e| e.to_string());
    sync_duration.record(started.elapsed());
    if outcome.is_ok() {
        unsynced.release_all();
    }
    for (reply, changed) in written.changes {
        let answer = outcome.clone().map_err(StoreError::Storage);
        let _ = reply.send(answer.and(changed));
    }
    for (reply, appended) in written.waiters {
        let answer = outcome.clone().map(|()| appended);
        let _ = reply.send(answer.map_err(StoreError::Storage));
    }
    if outcome.is_ok() {
        notices.synced(&written.stored);
    }
    announce_synced(outcome, written.stored, announce);
}

/// Hands synced messages to the publisher, waiting for room when it is behind
/// (the writer waits, and the ingest queue fills). Messages whose sync
/// failed are announced to nobody: they may not survive a restart, which could
/// give their ids to others. Their requests were answered with the error.
fn announce_synced(
    synced: Result<(), String>,
    stored: Vec<Stored>,
    announce: &mpsc::Sender<Vec<Stored>>,
) {
    if stored.is_empty() {
        return;
    }
    match synced {
        Ok(()) => {
            if announce.blocking_send(stored).is_err() {
                log::debug!("nobody takes announcements; messages stay in the outbox");
            }
        }
        Err(e) => log::error!(
            "{} messages are not announced: sync failed: {e}",
            stored.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use protocol::ChannelId;

    use super::*;

    fn stored(id: u64) -> Vec<Stored> {
        let channel = ChannelId::from_bytes([7; 16]);
        let json = Bytes::from_static(b"{}");
        vec![Stored { channel, id, json }]
    }

    #[test]
    fn a_synced_message_is_announced() {
        let (announce, mut announced) = mpsc::channel(1);
        announce_synced(Ok(()), stored(3), &announce);
        let ids: Vec<u64> = announced
            .try_recv()
            .expect("announced")
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, [3]);
    }

    #[test]
    fn a_message_whose_sync_failed_is_announced_to_nobody() {
        let (announce, mut announced) = mpsc::channel(1);
        announce_synced(Err("disk full".into()), stored(3), &announce);
        assert!(announced.try_recv().is_err());
    }
}
