//! Concurrent reads of the same page of history are one read.
//!
//! After a node restarts or a proxy drops its connections, thousands of
//! streams come back at once, most of them with the same `Last-Event-ID` on
//! the same channel (they had all received its last message). Each asks
//! history for the page after that id; [`SharedReads`] sends one request per
//! distinct `(channel, after, limit)` in flight, and every stream asking the
//! same while it runs gets its answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, WeakShared};
use protocol::{ChannelId, Message};

use super::{HistoryError, HistoryFuture, HistorySource, LatestFuture};

/// One page read: which channel, after which id, how many at most.
type Page = (ChannelId, u64, usize);
type Read = BoxFuture<'static, Result<Arc<Vec<Message>>, HistoryError>>;
type InFlight = Arc<Mutex<HashMap<Page, WeakShared<Read>>>>;

/// A [`HistorySource`] that joins identical reads in flight.
pub struct SharedReads {
    source: Arc<dyn HistorySource>,
    in_flight: InFlight,
}

impl SharedReads {
    pub fn new(source: Arc<dyn HistorySource>) -> Self {
        SharedReads {
            source,
            in_flight: Arc::default(),
        }
    }

    /// The read of `page` in flight, or a new one.
    fn read(&self, page: Page) -> Shared<Read> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(read) = in_flight.get(&page).and_then(WeakShared::upgrade) {
            crate::metrics::history_read_shared();
            return read;
        }
        let (channel, after, limit) = page;
        let reading = self.source.after(channel, after, limit);
        let forget = Forget {
            in_flight: self.in_flight.clone(),
            page,
        };
        let read: Read = async move {
            let _forget = forget;
            reading.await.map(Arc::new)
        }
        .boxed();
        let read = read.shared();
        if let Some(weak) = read.downgrade() {
            in_flight.insert(page, weak);
        }
        read
    }
}

impl HistorySource for SharedReads {
    fn after(&self, channel: ChannelId, after: u64, limit: usize) -> HistoryFuture {
        let read = self.read((channel, after, limit));
        Box::pin(async move { read.await.map(|messages| messages.as_ref().clone()) })
    }

    fn latest_id(&self, channel: ChannelId) -> LatestFuture {
        self.source.latest_id(channel)
    }
}

/// Takes a page off the reads in flight when its read ends or is dropped (by
/// the last stream waiting for it): a later stream asking for it reads anew.
struct Forget {
    in_flight: InFlight,
    page: Page,
}

impl Drop for Forget {
    fn drop(&mut self) {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        in_flight.remove(&self.page);
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
        let reads: Vec<_> = (0..200).map(|_| history.after(channel, 7, 200)).collect();
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
            history.after(channel, 7, 200),
            history.after(channel, 8, 200)
        );
        assert_eq!(a.expect("a")[0].id, 8);
        assert_eq!(b.expect("b")[0].id, 9);
        assert_eq!(counted.reads.load(Ordering::SeqCst), 2);
        history.after(channel, 7, 200).await.expect("again");
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
        drop(history.after(channel, 7, 200));
        history.after(channel, 7, 200).await.expect("page");
        assert_eq!(counted.reads.load(Ordering::SeqCst), 2);
        assert!(history.in_flight.lock().expect("lock").is_empty());
    }
}
