//! A lane: one webhook's deliveries of one channel, in id order.
//!
//! A run of a lane reads the channel's synced log after its cursor, a page at
//! a time, and sends the entries the webhook wants in batches of at most
//! `--webhook-batch` (one POST each), each until the app acknowledges it
//! (trying again after a pause as long as it takes), then moves the cursor
//! and records it in the store. Only one run of a lane is ever in progress,
//! so a channel's events reach the app in order even while some fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use protocol::ChannelId;
use server::tasks::Background;

use super::delivery::{self, Sender};
use super::endpoint::Endpoint;
use super::event::{self, Event};
use crate::metrics;
use crate::store::{Store, StoreError};

/// Entries read from the log per page.
const PAGE: usize = 256;
/// How often, and how long apart, the last cursor of a run is offered to a
/// busy writer before the run gives up on recording it (the next run does).
const RECORD_TRIES: usize = 20;
const RECORD_PAUSE: Duration = Duration::from_millis(50);

/// What every lane shares: the store, where its reads run, the HTTP client.
pub(super) struct Context {
    pub store: Store,
    pub background: Background,
    pub sender: Sender,
    pub max_backoff: Duration,
    /// Most events in one POST.
    pub batch: usize,
}

/// One run of a lane.
pub(super) struct Run {
    pub context: Arc<Context>,
    pub endpoint: Arc<Endpoint>,
    pub channel: ChannelId,
    /// The last id delivered, when the dispatcher knows it; else it is read
    /// from the store.
    pub cursor: Option<u64>,
    /// Where the run shows its cursor as it moves (for the backlog).
    pub progress: Arc<AtomicU64>,
}

/// The entries of a page the webhook wants: their ids and their events.
#[derive(Default)]
struct Wanted {
    ids: Vec<u64>,
    events: Vec<Event>,
}

/// A page of the log, and what retention removed.
struct Page {
    entries: Vec<(u64, Bytes)>,
    trimmed_through: u64,
}

impl Run {
    /// Delivers what the log holds after the cursor; returns the cursor it
    /// reached (`None` when it could not even read it).
    pub async fn deliver_all(mut self) -> Option<u64> {
        let mut cursor = self.start_cursor().await?;
        let mut recorded = cursor;
        loop {
            self.progress.store(cursor, Ordering::Relaxed);
            let page = match self.read_page(cursor).await {
                Ok(page) => page,
                Err(e) => {
                    log::error!(
                        "webhook {}: cannot read {}: {e}",
                        self.shown(),
                        self.channel
                    );
                    break;
                }
            };
            let Some(&(first, _)) = page.entries.first() else {
                if page.trimmed_through > cursor {
                    self.skipped(cursor, page.trimmed_through + 1);
                    cursor = page.trimmed_through;
                    continue;
                }
                break;
            };
            if first > cursor + 1 {
                self.skipped(cursor, first);
            }
            let full = page.entries.len() == PAGE;
            let end = page.entries.last().map_or(cursor, |&(id, _)| id);
            let wanted = self.wanted(page.entries);
            let batch = self.context.batch.max(1);
            for (ids, events) in wanted.ids.chunks(batch).zip(wanted.events.chunks(batch)) {
                self.deliver(ids, events).await;
                cursor = ids.last().copied().unwrap_or(cursor);
                self.progress.store(cursor, Ordering::Relaxed);
                self.record(cursor, &mut recorded);
            }
            cursor = end;
            self.progress.store(cursor, Ordering::Relaxed);
            self.record(cursor, &mut recorded);
            if !full {
                break;
            }
        }
        self.record_last(cursor, recorded).await;
        Some(cursor)
    }

    async fn start_cursor(&mut self) -> Option<u64> {
        if let Some(cursor) = self.cursor {
            return Some(cursor);
        }
        let (hook, channel) = (self.endpoint.id(), self.channel);
        let read = self
            .blocking_read(move |store| store.webhook_cursor(hook, channel))
            .await;
        read.map_err(|e| log::error!("webhook {}: cannot read its cursor: {e}", self.shown()))
            .ok()
    }

    /// The events of `entries` the webhook wants, with their ids.
    fn wanted(&self, entries: Vec<(u64, Bytes)>) -> Wanted {
        let mut wanted = Wanted::default();
        for (id, json) in entries {
            match event::of_entry(self.channel, id, &json) {
                Ok(event) if self.endpoint.wants(event.event_type) => {
                    wanted.ids.push(id);
                    wanted.events.push(event);
                }
                Ok(_) => {}
                Err(e) => {
                    log::error!(
                        "webhook: entry {id} of {} is unreadable, not sent: {e}",
                        self.channel
                    );
                    metrics::webhook_outcome("unreadable", 1);
                }
            }
        }
        wanted
    }

    /// Sends one batch (`events`, of the entries `ids`) until the app
    /// acknowledges it.
    async fn deliver(&self, ids: &[u64], events: &[Event]) {
        let first = ids.first().copied().unwrap_or_default();
        let shown_id = format!("the batch from {}", event::event_id(self.channel, first));
        let context = &self.context;
        delivery::until_acknowledged(
            &context.sender,
            &self.endpoint,
            events,
            context.max_backoff,
            &shown_id,
        )
        .await;
    }

    /// Retention removed the ids from `after + 1` to `before - 1` before
    /// they were delivered: said, counted, and passed over.
    fn skipped(&self, after: u64, before: u64) {
        let count = before.saturating_sub(after + 1);
        if count == 0 {
            return;
        }
        log::warn!(
            "webhook {}: ids {}..={} of {} were removed by retention before delivery; skipped",
            self.shown(),
            after + 1,
            before - 1,
            self.channel
        );
        metrics::webhook_outcome("skipped", count);
    }

    /// Offers the cursor to the writer; a busy writer gets the next one.
    fn record(&self, cursor: u64, recorded: &mut u64) {
        if cursor <= *recorded {
            return;
        }
        let cursors = vec![(self.channel, cursor)];
        match self
            .context
            .store
            .record_webhook_cursors(self.endpoint.id(), cursors)
        {
            Ok(()) => *recorded = cursor,
            Err(StoreError::Busy) => {}
            Err(e) => log::warn!("webhook {}: cannot record its cursor: {e}", self.shown()),
        }
    }

    /// Records the run's last cursor, waiting a little for a busy writer.
    async fn record_last(&self, cursor: u64, mut recorded: u64) {
        for _ in 0..RECORD_TRIES {
            self.record(cursor, &mut recorded);
            if recorded >= cursor {
                return;
            }
            tokio::time::sleep(RECORD_PAUSE).await;
        }
        log::warn!(
            "webhook {}: the store is busy; {} may be delivered again after a restart",
            self.shown(),
            self.channel
        );
    }

    async fn read_page(&self, after: u64) -> Result<Page, String> {
        let channel = self.channel;
        self.blocking_read(move |store| {
            let entries = store.synced().after_raw(channel, after, PAGE)?;
            let trimmed_through = store.trimmed_through(channel)?;
            Ok(Page {
                entries,
                trimmed_through,
            })
        })
        .await
    }

    /// Runs a store read on the blocking pool: sled calls never run on the
    /// async workers.
    async fn blocking_read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, sled::Error> + Send + 'static,
    ) -> Result<T, String> {
        let store = self.context.store.clone();
        match self.context.background.blocking(move || read(&store)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the read did not finish: {e}")),
        }
    }

    fn shown(&self) -> String {
        self.endpoint.shown()
    }
}
