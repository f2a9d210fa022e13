//! The store: the one component that owns sled.
//!
//! Trees ([`trees`]): `messages` keyed `channel ++ id` (one channel's history is
//! one ordered range), `idempotency` (`channel ++ key` → id), `bans`
//! (`channel ++ name` → expiry), and two per-channel watermarks: `published`
//! (every id up to it was acknowledged by the broker; the ids above it are the
//! outbox) and `trimmed` (every id up to it was removed by retention).
//!
//! Every write goes through a bounded queue to one writer thread ([`writer`]):
//! appends, which it numbers per channel, checks for idempotency keys and
//! inserts (each message atomically with its key), and the other changes
//! ([`changes`]: bans, retention's trims, the publisher's watermarks). It then
//! syncs the batch ([`commit`]), lets readers see it ([`unsynced`]), answers
//! the requests that wait for the disk, and announces the stored messages in id
//! order on a bounded channel ([`Announcements`]) that the publisher consumes on
//! its own task, and tells the webhooks which ids are new without ever waiting
//! for them ([`notices`]; their cursors are in the `webhooks` tree, [`cursors`]). Every read of messages is capped at what is synced
//! ([`reads`]). Nothing of ours runs inside sled, and a slow consumer holds up
//! new appends (the queue fills, and a POST is answered `503`) rather than
//! growing a queue.

pub mod admission;
mod changes;
mod commit;
mod compaction;
pub mod cursors;
pub mod erasure;
mod keys;
pub mod notices;
mod numbers;
mod reads;
pub mod retention;
mod trees;
mod unsynced;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::{ChannelId, Kind, Message};
use tokio::sync::{mpsc, oneshot};

use admission::Admission;
use changes::Change;
use erasure::Erasure;
use keys::decode_u64;
use notices::{NoticeReceiver, Notices};
pub use reads::SyncedHistory;
use trees::{Trees, watermarks};
use unsynced::Unsynced;
pub(crate) use writer::new_entry;

use crate::domain::NewMessage;

/// Batches of stored messages, synced, in id order per channel.
pub type Announcements = mpsc::Receiver<Vec<Stored>>;

/// A message that is stored and synced, as announced to the publisher.
#[derive(Debug, Clone)]
pub struct Stored {
    pub channel: ChannelId,
    pub id: u64,
    pub json: Bytes,
}

/// One message to append.
#[derive(Debug, Clone)]
pub struct Entry {
    pub channel: ChannelId,
    pub message: NewMessage,
    /// A retry with the same key on the same channel returns the original.
    pub idempotency_key: Option<String>,
    /// The key names a message seen for the first time (an MQTT post delivered
    /// without the redelivery flag): it is recorded for this message, replacing
    /// any earlier one, and not looked up. Only a redelivery can repeat it, so an
    /// identical post that happens to derive the same key later is not mistaken
    /// for a retry.
    pub key_is_new: bool,
    /// An edit or deletion of an earlier message, rather than a new one.
    pub revises: Option<Revision>,
}

/// What an edit or deletion entry changes: its kind ([`Kind::Update`] or
/// [`Kind::Delete`]) and the id of its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision {
    pub kind: Kind,
    pub target: u64,
}

impl Entry {
    /// A message with no idempotency key.
    pub fn new(channel: ChannelId, message: NewMessage) -> Self {
        Entry {
            channel,
            message,
            idempotency_key: None,
            key_is_new: false,
            revises: None,
        }
    }

    /// An edit (`message` holds the new text) or a deletion (its text is not
    /// stored) of message `revision.target`, by `message.author`.
    pub fn revision(channel: ChannelId, message: NewMessage, revision: Revision) -> Self {
        Entry {
            revises: Some(revision),
            ..Entry::new(channel, message)
        }
    }

    /// A retry with the same `key` on the same channel returns the original.
    pub fn with_key(mut self, key: Option<String>) -> Self {
        self.idempotency_key = key;
        self
    }
}

/// The outcome of an append: the stored message, its JSON, and whether it is new
/// (`false` when an idempotency key matched an earlier message).
#[derive(Debug, Clone)]
pub struct Appended {
    pub message: Message,
    pub json: Bytes,
    pub created: bool,
}

/// When an append is answered, and what readers may see until then: the
/// promise of `--durable-ack`, named where it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Once the messages are synced to disk; readers see them from then on
    /// (no reader sees what a crash could take back).
    Synced,
    /// Once they are written to the store's memory; readers see them from
    /// then on, and a crash before the sync can take them back.
    Written,
}

impl Ack {
    /// What `--durable-ack` asks for.
    pub fn durable(durable: bool) -> Self {
        if durable { Ack::Synced } else { Ack::Written }
    }
}

/// A write queued by [`Store::submit`].
pub struct Pending(oneshot::Receiver<Result<Vec<Appended>, StoreError>>);

impl Pending {
    pub async fn outcome(self) -> Result<Vec<Appended>, StoreError> {
        self.0.await.map_err(|_| StoreError::Stopped)?
    }
}

/// What a channel holds (see [`Store::channel_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelStats {
    pub messages: u64,
    pub first_id: Option<u64>,
    pub last_id: Option<u64>,
}

/// Why an append or a flush did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The ingest queue is full, or an append would wait in it longer than
    /// the budget: nothing was stored; try again shortly.
    #[error("the store is overloaded")]
    Busy,
    #[error("the store has stopped")]
    Stopped,
    /// The replicated store cannot be reached now (no quorum, no
    /// connection): nothing is known to be stored; try again shortly.
    #[error("history is unavailable: {0}")]
    Unavailable(String),
    /// sled failed; its error as text (one failure answers many requests).
    #[error("storage failure: {0}")]
    Storage(String),
}

/// Sizes of the store's queues and of what it keeps in memory.
#[derive(Debug, Clone, Copy)]
pub struct StoreSettings {
    /// Append requests waiting for the writer; past this, appends are refused.
    pub ingest_queue: usize,
    /// Synced batches waiting for the publisher.
    pub announce_queue: usize,
    /// A channel not appended to for this long is dropped from memory (its last
    /// id is read from the store again on its next append).
    pub idle_channel: Duration,
    /// Bytes of sled's page cache (see `--store-cache`).
    pub cache_bytes: u64,
    /// Appends that would wait longer than this before the writer takes them
    /// are refused (`None`: only a full queue refuses).
    pub max_queue_delay: Option<Duration>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            ingest_queue: 4096,
            announce_queue: 64,
            idle_channel: Duration::from_secs(300),
            cache_bytes: DEFAULT_CACHE_BYTES,
            max_queue_delay: Some(DEFAULT_MAX_QUEUE_DELAY),
        }
    }
}

/// How long an append may wait for the writer by default (see
/// [`admission`]; chosen by measurement, BENCHMARKS.md).
pub const DEFAULT_MAX_QUEUE_DELAY: Duration = Duration::from_millis(20);

/// sled's page cache by default: 128 MiB, sized for a small machine (sled's
/// own default is 1 GiB).
pub const DEFAULT_CACHE_BYTES: u64 = 128 * 1024 * 1024;

/// Cheap-to-clone handle to the store, shared by every request.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    #[cfg(test)]
    unsynced: Arc<Unsynced>,
    trees: Trees,
    /// Every read of messages, capped at what is synced.
    history: SyncedHistory,
    /// This store's own id, made once and kept with the data (see [`Store::node_id`]).
    node_id: uuid::Uuid,
    ingest: SyncSender<writer::Request>,
    /// Refuses appends that would wait too long (see `--max-queue-delay`).
    admission: Arc<Admission>,
    /// Where the writer tells a reader of the log what it synced (see [`notices`]).
    notices: Arc<Notices>,
    /// The writer thread, joined when the last handle goes.
    threads: writer::Threads,
}

impl Store {
    /// Opens the store and starts its threads; the publisher takes the
    /// [`Announcements`].
    pub fn open(
        dir: &Path,
        settings: StoreSettings,
    ) -> Result<(Store, Announcements), sled::Error> {
        let trees = Trees::open_compacted(dir, settings.cache_bytes)?;
        let node_id = trees.node_id()?;
        let unsynced = Arc::new(Unsynced::default());
        let history = SyncedHistory::new(&trees, unsynced.clone());
        let (announce, announcements) = mpsc::channel(settings.announce_queue.max(1));
        let admission = Arc::new(Admission::new(settings.max_queue_delay));
        let notices = Arc::new(Notices::default());
        let (ingest, threads) = writer::start(
            trees.clone(),
            settings,
            announce,
            unsynced.clone(),
            admission.clone(),
            notices.clone(),
        )?;
        let inner = Inner {
            #[cfg(test)]
            unsynced,
            trees,
            history,
            node_id,
            ingest,
            admission,
            notices,
            threads,
        };
        Ok((
            Store {
                inner: Arc::new(inner),
            },
            announcements,
        ))
    }

    /// Refuses appends also while a broadcast node's fan-out is later than
    /// `budget` (`--max-fanout-delay`, [`admission`]).
    pub fn follow_fanout(&self, delays: server::presence::fanout::FanoutDelays, budget: Duration) {
        self.inner.admission.follow_fanout(delays, budget);
    }

    /// Numbers and stores `entries`, in order. What is atomic: each message
    /// with its idempotency key (a crash keeps both or neither), and a write
    /// with any key as a whole; messages without keys go in one by one, so a
    /// crash before the sync keeps a prefix of them (none was answered as
    /// durable, read or announced). With [`Ack::Synced`], answers once they are
    /// synced to disk, and readers see them from then on; else once they are
    /// written. `Busy` when the ingest queue is full, or when appends queued
    /// now would wait longer than `--max-queue-delay` ([`admission`]): then
    /// nothing is stored.
    pub async fn append(&self, entries: Vec<Entry>, ack: Ack) -> Result<Vec<Appended>, StoreError> {
        self.submit(entries, ack)?.outcome().await
    }

    /// Like [`Store::append`], but queues the write before returning, so writes
    /// submitted one after the other are numbered in that order; the outcome is
    /// awaited separately.
    pub fn submit(&self, entries: Vec<Entry>, ack: Ack) -> Result<Pending, StoreError> {
        let admission = &self.inner.admission;
        let counted = !entries.is_empty();
        if counted && admission.is_over_budget() {
            return Err(StoreError::Busy);
        }
        let (reply, outcome) = oneshot::channel();
        if counted {
            admission.queued();
        }
        let queued = self.request(writer::Request::Append {
            entries,
            ack,
            reply,
            queued_at: Instant::now(),
        });
        if queued.is_err() && counted {
            admission.not_queued();
        }
        queued.map(|()| Pending(outcome))
    }

    /// Queues a request for the writer, or refuses it when the queue is full.
    fn request(&self, request: writer::Request) -> Result<(), StoreError> {
        self.inner.ingest.try_send(request).map_err(|e| match e {
            TrySendError::Full(_) => StoreError::Busy,
            TrySendError::Disconnected(_) => StoreError::Stopped,
        })
    }

    /// Queues `change` for the writer and does not wait for it: `Busy` when
    /// the writer's queue is full (nothing is queued).
    fn change_without_waiting(&self, change: Change) -> Result<(), StoreError> {
        let (reply, _unread) = oneshot::channel();
        self.request(writer::Request::Change { change, reply })
    }

    /// Has the writer make `change`, and waits for its answer.
    async fn change(&self, change: Change) -> Result<u64, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.request(writer::Request::Change { change, reply })?;
        outcome.await.map_err(|_| StoreError::Stopped)?
    }

    /// The entries `erasure` covers, as they will be stored once erased (a
    /// scan: call it off the async workers).
    pub fn erasable(&self, erasure: &Erasure) -> Result<Vec<Message>, sled::Error> {
        erasure::erased_entries(&self.inner.history, erasure)
    }

    /// Stores `entries` (from [`Store::erasable`]) over their originals, in
    /// batches, each synced; answers how many were rewritten.
    pub async fn erase(&self, entries: Vec<Message>) -> Result<u64, StoreError> {
        let mut erased = 0;
        for batch in entries.chunks(erasure::ERASE_BATCH) {
            erased += self.change(Change::Erase(batch.to_vec())).await?;
        }
        Ok(erased)
    }

    /// Appends one message (see [`Store::append`]).
    pub async fn append_one(&self, entry: Entry, ack: Ack) -> Result<Appended, StoreError> {
        let mut appended = self.append(vec![entry], ack).await?;
        appended.pop().ok_or(StoreError::Stopped)
    }

    /// Waits until everything appended before the call is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.append(Vec::new(), Ack::Synced).await.map(drop)
    }

    /// Notices of what each sync stored, at most `capacity` waiting, never
    /// holding up the writer (see [`notices`]); `None` once taken.
    pub fn listen_for_notices(&self, capacity: usize) -> Option<NoticeReceiver> {
        self.inner.notices.listen(capacity)
    }

    /// Every read of stored messages: capped, per channel, at what is synced
    /// (with `--durable-ack false`, at what is written), so no reader sees a
    /// message that a crash could take back and a restart number again.
    pub fn synced(&self) -> &SyncedHistory {
        &self.inner.history
    }

    /// An id made when the data directory was first used and kept with it: the
    /// same across restarts, different for every data directory (so for every
    /// chat-service), as an MQTT client id with a persistent session needs.
    pub fn node_id(&self) -> uuid::Uuid {
        self.inner.node_id
    }

    /// Every ban stored, expired or not: `(channel, name, expires_at)`.
    pub fn bans(&self) -> Result<Vec<(ChannelId, String, u64)>, sled::Error> {
        self.inner
            .trees
            .bans
            .iter()
            .filter_map(|entry| match entry {
                Ok((key, value)) => {
                    let (channel, name) = keys::split_channel_key(&key)?;
                    Some(Ok((channel, name, decode_u64(&value))))
                }
                Err(e) => Some(Err(e)),
            })
            .collect()
    }

    /// Stores a ban of `name` on `channel` until `expires_at` (seconds since
    /// the Unix epoch), or lifts it with `None`; answers once synced, with the
    /// expiry of the ban it replaced or lifted (0: none).
    pub async fn set_ban(
        &self,
        channel: ChannelId,
        name: &str,
        expires_at: Option<u64>,
    ) -> Result<u64, StoreError> {
        let name = name.to_string();
        self.change(Change::Ban {
            channel,
            name,
            expires_at,
        })
        .await
    }

    /// Channels whose last id the writer holds in memory (see
    /// [`StoreSettings::idle_channel`]).
    pub fn channels_in_memory(&self) -> usize {
        self.inner.threads.channels_in_memory()
    }

    /// Whether the store answers and its threads run: used by `/readyz`.
    pub fn is_healthy(&self) -> bool {
        self.inner.threads.are_running() && self.inner.trees.messages.first().is_ok()
    }

    /// The last id given out in every channel the store holds, read from the
    /// store (at start-up and by retention; the writer keeps only busy channels).
    pub fn last_ids(&self) -> Result<HashMap<ChannelId, u64>, sled::Error> {
        self.inner.trees.last_ids()
    }

    /// The idempotency keys `channel` holds, by the id each names.
    pub fn idempotency_keys(
        &self,
        channel: ChannelId,
    ) -> Result<HashMap<u64, String>, sled::Error> {
        let mut keys = HashMap::new();
        for entry in self.inner.trees.idempotency.scan_prefix(channel.as_bytes()) {
            let (key, id) = entry?;
            if let Some((_, key)) = keys::split_channel_key(&key) {
                keys.insert(decode_u64(&id), key);
            }
        }
        Ok(keys)
    }

    /// Per channel, the id up to which the broker acknowledged every message.
    pub fn published_watermarks(&self) -> Result<HashMap<ChannelId, u64>, sled::Error> {
        watermarks(&self.inner.trees.published)
    }

    /// The id up to which the broker acknowledged every message of `channel`.
    pub fn published_through(&self, channel: ChannelId) -> Result<u64, sled::Error> {
        let value = self.inner.trees.published.get(channel.as_bytes())?;
        Ok(value.map_or(0, |value| decode_u64(&value)))
    }

    /// Records that the broker acknowledged every message of each channel up
    /// to its id, without waiting: the writer stores them with its next batch
    /// and does not sync for them (losing them in a crash only means
    /// re-publishing messages subscribers already have, and they drop those by
    /// id). `Busy` when the writer's queue is full: nothing is recorded.
    pub fn record_published(&self, watermarks: Vec<(ChannelId, u64)>) -> Result<(), StoreError> {
        if watermarks.is_empty() {
            return Ok(());
        }
        self.change_without_waiting(Change::Published(watermarks))
    }

    /// Every id of `channel` up to this one was removed by retention (0: none).
    pub fn trimmed_through(&self, channel: ChannelId) -> Result<u64, sled::Error> {
        self.inner.trees.trimmed_through(channel)
    }
}

/// A stored value that does not parse is logged and skipped rather than failing
/// every history read of the channel.
fn decode(value: &[u8]) -> Option<Message> {
    match serde_json::from_slice(value) {
        Ok(message) => Some(message),
        Err(e) => {
            log::error!("skipping unreadable stored message: {e}");
            None
        }
    }
}

#[cfg(test)]
mod erasure_tests;
#[cfg(test)]
mod revision_tests;
#[cfg(test)]
pub(crate) mod tests;
