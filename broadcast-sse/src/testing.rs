//! Test doubles shared by the unit tests: an in-memory history that can fail,
//! hold requests at a gate, and count what it was asked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use protocol::{ChannelId, Message};
use tokio::sync::Semaphore;

use crate::history::{HistoryError, HistoryFuture, HistorySource, LatestFuture};
use crate::hub::{Frame, Hub, SubscriptionChange};

/// A hub whose history holds nothing: a gap's backfill finds nothing and the
/// hub delivers what it held, leaving the rest to each stream's own catch-up.
pub fn hub_with_empty_history(
    ring_size: usize,
) -> (
    Hub,
    tokio::sync::mpsc::UnboundedReceiver<SubscriptionChange>,
) {
    Hub::new(
        ring_size,
        Arc::new(Shared(FakeHistory::new())),
        server::tasks::Background::on_current_runtime(),
    )
}

pub fn channel(n: u8) -> ChannelId {
    ChannelId::from_bytes([n; 16])
}

pub fn message(channel: ChannelId, id: u64) -> Message {
    Message::new(
        id,
        channel,
        "ann",
        &format!("message {id}"),
        "2026-11-21T22:40:00.123Z",
    )
}

pub fn frame(channel: ChannelId, id: u64) -> Frame {
    Frame::from_message(&message(channel, id))
}

/// A frame whose bytes are only its id line (for tests that look at ids alone).
pub fn bare_frame(id: u64) -> Frame {
    Frame {
        id,
        bytes: Bytes::from(format!("id: {id}\n\n")),
        made: std::time::Instant::now(),
    }
}

#[derive(Default)]
pub struct FakeHistory {
    messages: Mutex<Vec<Message>>,
    failures: AtomicUsize,
    calls: Mutex<Vec<(ChannelId, u64)>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// When set, each request waits for a permit before it answers.
    gate: Option<Arc<Semaphore>>,
}

impl FakeHistory {
    pub fn new() -> Arc<Self> {
        Arc::new(FakeHistory::default())
    }

    /// A history whose requests wait until [`FakeHistory::open`] lets them through.
    pub fn gated() -> Arc<Self> {
        Arc::new(FakeHistory {
            gate: Some(Arc::new(Semaphore::new(0))),
            ..FakeHistory::default()
        })
    }

    pub fn store(&self, channel: ChannelId, ids: impl IntoIterator<Item = u64>) {
        let mut messages = self.lock_messages();
        messages.extend(ids.into_iter().map(|id| message(channel, id)));
        messages.sort_by_key(|m| (*m.channel.as_bytes(), m.id));
    }

    /// The next `n` requests fail.
    pub fn fail_next(&self, n: usize) {
        self.failures.store(n, Ordering::SeqCst);
    }

    /// Lets `n` waiting or future requests answer.
    pub fn open(&self, n: usize) {
        if let Some(gate) = &self.gate {
            gate.add_permits(n);
        }
    }

    /// `(channel, after)` of every request so far.
    pub fn calls(&self) -> Vec<(ChannelId, u64)> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    async fn pass_gate(&self) {
        if let Some(gate) = self.gate.clone()
            && let Ok(permit) = gate.acquire_owned().await
        {
            permit.forget();
        }
    }

    fn lock_messages(&self) -> std::sync::MutexGuard<'_, Vec<Message>> {
        self.messages.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn answer(
        &self,
        channel: ChannelId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, HistoryError> {
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(HistoryError("history is down".into()));
        }
        Ok(self
            .lock_messages()
            .iter()
            .filter(|m| m.channel == channel && m.id > after)
            .take(limit)
            .cloned()
            .collect())
    }
}

/// Shares one fake between the code under test and the test itself.
pub struct Shared(pub Arc<FakeHistory>);

impl HistorySource for Shared {
    fn after(&self, channel: ChannelId, after: u64, limit: usize) -> HistoryFuture {
        let fake = self.0.clone();
        if let Ok(mut calls) = fake.calls.lock() {
            calls.push((channel, after));
        }
        Box::pin(async move {
            let now = fake.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            fake.max_in_flight.fetch_max(now, Ordering::SeqCst);
            fake.pass_gate().await;
            fake.in_flight.fetch_sub(1, Ordering::SeqCst);
            fake.answer(channel, after, limit)
        })
    }

    fn latest_id(&self, channel: ChannelId) -> LatestFuture {
        let fake = self.0.clone();
        Box::pin(async move {
            fake.pass_gate().await;
            let newest = fake.answer(channel, 0, usize::MAX)?;
            Ok(newest.last().map(|message| message.id))
        })
    }
}

/// Lets spawned tasks run until `done` holds, without waiting on the clock.
pub async fn settle(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if done() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    done()
}
