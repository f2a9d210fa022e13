//! Concurrent reads of the same page of history are one read.
//!
//! After a node restarts or a proxy drops its connections, thousands of
//! streams come back at once, most of them with the same `Last-Event-ID` on
//! the same channel (they had all received its last message). Each asks
//! history for the page after that id; [`SharedReads`] sends one request per
//! distinct `(channel, after, limit)` in flight, and every stream asking the
//! same while it runs gets its answer, if that read can hold what the stream
//! needs.
//!
//! A stream catching up needs every message up to the last one this node
//! delivered before it joined: those went to the channel's ring before the
//! stream listened to it, so only history can give them. A read holds at least
//! what this node had delivered when it was asked for (delivered means stored
//! and synced, so the read finds it). So a stream joins a read in flight only
//! if nothing was delivered on the channel between that read's start and the
//! stream's question; otherwise it reads anew. Without this rule, a stream
//! could join a read that began before a message was delivered, get a page
//! without it, and miss it until the next message on the channel showed the
//! gap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, WeakShared};
use protocol::{ChannelId, Message};

use super::{HistoryError, HistoryFuture, HistorySource, LatestFuture};

/// One page read: which channel, after which id, how many at most.
type Page = (ChannelId, u64, usize);
type Read = BoxFuture<'static, Result<Arc<Vec<Message>>, HistoryError>>;
type InFlight = Arc<Mutex<HashMap<Page, ReadInFlight>>>;

/// A read in flight, and the last id this node had delivered on its channel
/// when it was asked for: it holds at least every message up to that id.
struct ReadInFlight {
    read: WeakShared<Read>,
    holds_delivered: Option<u64>,
    serial: u64,
}

/// A [`HistorySource`] that joins identical reads in flight.
pub struct SharedReads {
    source: Arc<dyn HistorySource>,
    in_flight: InFlight,
    serials: AtomicU64,
}

impl SharedReads {
    pub fn new(source: Arc<dyn HistorySource>) -> Self {
        SharedReads {
            source,
            in_flight: Arc::default(),
            serials: AtomicU64::new(0),
        }
    }

    /// The read of `page` in flight that holds every message up to
    /// `delivered`, or a new one.
    fn read(&self, page: Page, delivered: Option<u64>) -> Shared<Read> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let joinable = in_flight
            .get(&page)
            .filter(|read| read.holds_delivered >= delivered)
            .and_then(|read| read.read.upgrade());
        if let Some(read) = joinable {
            crate::metrics::history_read_shared();
            return read;
        }
        let (channel, after, limit) = page;
        let reading = self.source.after(channel, after, limit);
        let serial = self.serials.fetch_add(1, Ordering::Relaxed);
        let forget = Forget {
            in_flight: self.in_flight.clone(),
            page,
            serial,
        };
        let read: Read = async move {
            let _forget = forget;
            reading.await.map(Arc::new)
        }
        .boxed();
        let read = read.shared();
        if let Some(weak) = read.downgrade() {
            let entry = ReadInFlight {
                read: weak,
                holds_delivered: delivered,
                serial,
            };
            in_flight.insert(page, entry);
        }
        read
    }
}

impl HistorySource for SharedReads {
    /// A read of its own: its caller did not say what it must hold.
    fn after(&self, channel: ChannelId, after: u64, limit: usize) -> HistoryFuture {
        self.source.after(channel, after, limit)
    }

    fn after_delivered(
        &self,
        channel: ChannelId,
        after: u64,
        limit: usize,
        delivered: Option<u64>,
    ) -> HistoryFuture {
        let read = self.read((channel, after, limit), delivered);
        Box::pin(async move { read.await.map(|messages| messages.as_ref().clone()) })
    }

    fn latest_id(&self, channel: ChannelId) -> LatestFuture {
        self.source.latest_id(channel)
    }
}

/// Takes a read off the reads in flight when it ends or is dropped (by the
/// last stream waiting for it), unless a newer read of the same page took its
/// place: a later stream asking for it reads anew.
struct Forget {
    in_flight: InFlight,
    page: Page,
    serial: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if in_flight
            .get(&self.page)
            .is_some_and(|read| read.serial == self.serial)
        {
            in_flight.remove(&self.page);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::testing::{channel, message};

    /// History that counts its reads and answers each after a pause.
    #[derive(Default)]
    struct Counted {
        reads: AtomicUsize,
    }

    impl HistorySource for Arc<Counted> {
        fn after(&self, channel: ChannelId, after: u64, limit: usize) -> HistoryFuture {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let ids = (after + 1)..=(after + limit as u64).min(after + 3);
                Ok(ids.map(|id| message(channel, id)).collect())
            })
        }
    }

    fn shared() -> (Arc<Counted>, SharedReads) {
        let counted = Arc::new(Counted::default());
        let source: Arc<dyn HistorySource> = Arc::new(counted.clone());
        (counted, SharedReads::new(source))
    }

    #[tokio::test]
    async fn two_hundred_streams_resuming_from_one_cursor_cause_one_read() {
        let (counted, history) = shared();
        let channel = channel(1);
        let reads: Vec<_> = (0..200)
            .map(|_| history.after_delivered(channel, 7, 200, Some(10)))
            .collect();
        let pages = futures_util::future::join_all(reads).await;
        assert_eq!(counted.reads.load(Ordering::SeqCst), 1);
        for page in pages {
            let ids: Vec<u64> = page.expect("page").iter().map(|m| m.id).collect();
            assert_eq!(ids, [8, 9, 10]);
        }
    }

    #[tokio::test]
    async fn other_cursors_and_later_reads_read_again() {
        let (counted, history) = shared();
        let channel = channel(1);
        let (a, b) = tokio::join!(
            history.after_delivered(channel, 7, 200, Some(10)),
            history.after_delivered(channel, 8, 200, Some(10))
        );
        assert_eq!(a.expect("a")[0].id, 8);
        assert_eq!(b.expect("b")[0].id, 9);
        assert_eq!(counted.reads.load(Ordering::SeqCst), 2);
        history
            .after_delivered(channel, 7, 200, Some(10))
            .await
            .expect("again");
        assert_eq!(
            counted.reads.load(Ordering::SeqCst),
            3,
            "a finished read is not kept"
        );
    }

    #[tokio::test]
    async fn a_read_every_stream_gave_up_on_is_not_joined() {
        let (counted, history) = shared();
        let channel = channel(1);
        drop(history.after_delivered(channel, 7, 200, Some(10)));
        history
            .after_delivered(channel, 7, 200, Some(10))
            .await
            .expect("page");
        assert_eq!(counted.reads.load(Ordering::SeqCst), 2);
        assert!(history.in_flight.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn a_read_asked_for_before_a_delivery_is_not_joined_after_it() {
        let (counted, history) = shared();
        let channel = channel(1);
        let before = history.after_delivered(channel, 7, 200, Some(10));
        // Message 11 was delivered: a stream that joined the channel after it
        // needs a read that holds it.
        let after_delivery = history.after_delivered(channel, 7, 200, Some(11));
        let no_newer = history.after_delivered(channel, 7, 200, Some(11));
        let (a, b, c) = tokio::join!(before, after_delivery, no_newer);
        for page in [a, b, c] {
            page.expect("page");
        }
        assert_eq!(
            counted.reads.load(Ordering::SeqCst),
            2,
            "the later streams read once, together"
        );
        assert!(history.in_flight.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn a_read_that_holds_more_is_joined() {
        let (counted, history) = shared();
        let channel = channel(1);
        let (a, b, c) = tokio::join!(
            history.after_delivered(channel, 7, 200, Some(11)),
            history.after_delivered(channel, 7, 200, Some(10)),
            history.after_delivered(channel, 7, 200, None)
        );
        for page in [a, b, c] {
            page.expect("page");
        }
        assert_eq!(counted.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_read_without_a_delivered_id_is_its_own() {
        let (counted, history) = shared();
        let channel = channel(1);
        let (a, b) = tokio::join!(
            history.after_delivered(channel, 7, 200, Some(10)),
            history.after(channel, 7, 200)
        );
        a.expect("a");
        b.expect("b");
        assert_eq!(counted.reads.load(Ordering::SeqCst), 2);
    }
}
