//! The writer thread: takes every queued append request, numbers its messages
//! (each channel in order, with no lock: this thread alone numbers), looks up
//! their idempotency keys, and inserts each message with its key in one atomic
//! write. Requests that do not wait for the disk are answered at once; then it
//! syncs the write for the others ([`commit`]) before it takes the next one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use protocol::{ChannelId, Kind, Message};
use server::metrics::names;
use sled::Transactional;
use sled::transaction::TransactionError;
use tokio::sync::{mpsc, oneshot};

use super::admission::Admission;
use super::changes::Change;
use super::commit::{self, Written};
use super::keys::{REVISION_KEY_LEN, channel_key, message_key, revision_key};
use super::notices::Notices;
use super::numbers::Numbers;
use super::unsynced::Unsynced;
use super::{Ack, Appended, Entry, StoreError, StoreSettings, Stored, Trees, decode};

/// Requests taken into one write at most, so one batch stays a bounded size.
const MAX_REQUESTS: usize = 512;

/// Told the outcome of an append request.
pub(super) type Reply = oneshot::Sender<Result<Vec<Appended>, StoreError>>;

/// Told the outcome of a change (see [`Change::apply`]).
pub(super) type ChangeReply = oneshot::Sender<Result<u64, StoreError>>;

/// A request to the writer thread.
pub(super) enum Request {
    /// Appends `entries`; an empty append only waits for a flush.
    Append {
        entries: Vec<Entry>,
        ack: Ack,
        reply: Reply,
        /// When it was queued, for [`Admission`].
        queued_at: Instant,
    },
    /// Any other write (`reply` may be dropped by a caller that does not wait).
    Change { change: Change, reply: ChangeReply },
}

/// An append request, once the writer took it.
struct Append {
    entries: Vec<Entry>,
    ack: Ack,
    reply: Reply,
}

/// The writer thread. Dropping it waits for it to end, which it does once the
/// ingest queue's sender is gone, so the database (and its file lock) is
/// released when the store is.
pub(super) struct Threads {
    writer: Option<JoinHandle<()>>,
    /// Channels the writer numbers from memory, as of its last batch.
    channels: Arc<AtomicUsize>,
}

impl Threads {
    pub fn channels_in_memory(&self) -> usize {
        self.channels.load(Ordering::Relaxed)
    }

    pub fn are_running(&self) -> bool {
        self.writer
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        if let Some(thread) = self.writer.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the writer thread; returns the ingest queue's sender.
pub(super) fn start(
    trees: Trees,
    settings: StoreSettings,
    announce: mpsc::Sender<Vec<Stored>>,
    unsynced: Arc<Unsynced>,
    admission: Arc<Admission>,
    notices: Arc<Notices>,
) -> std::io::Result<(SyncSender<Request>, Threads)> {
    let (ingest, requests) = sync_channel(settings.ingest_queue.max(1));
    let channels = Arc::new(AtomicUsize::new(0));
    let writer = Writer {
        trees,
        numbers: Numbers::new(settings.idle_channel),
        announce,
        notices,
        unsynced,
        admission,
        sync_duration: metrics::histogram!(names::STORE_COMMIT_DURATION),
        queue_wait: metrics::histogram!(names::STORE_QUEUE_WAIT),
        channels: channels.clone(),
    };
    let writer = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || writer.run(&requests))?;
    let threads = Threads {
        writer: Some(writer),
        channels,
    };
    Ok((ingest, threads))
}

struct Writer {
    trees: Trees,
    numbers: Numbers,
    /// Where synced messages go (the publisher).
    announce: mpsc::Sender<Vec<Stored>>,
    /// Told the new ids of each sync (the webhooks), never waited for.
    notices: Arc<Notices>,
    /// What readers may not see yet (see [`Unsynced`]).
    unsynced: Arc<Unsynced>,
    /// Told how long the appends it takes have waited.
    admission: Arc<Admission>,
    sync_duration: metrics::Histogram,
    /// How long the oldest append of each batch waited to be taken.
    queue_wait: metrics::Histogram,
    channels: Arc<AtomicUsize>,
}

/// One write being put together.
#[derive(Default)]
struct Staged {
    keys: sled::Batch,
    /// Keys given in this write, so a repeat within it is found too.
    new_keys: HashMap<(ChannelId, String), Appended>,
    /// The messages numbered in this write, in id order per channel.
    stored: Vec<Stored>,
    /// Index keys of the edits and deletions among them.
    revisions: Vec<[u8; REVISION_KEY_LEN]>,
    touched: Vec<ChannelId>,
}

impl Writer {
    fn run(mut self, requests: &Receiver<Request>) {
        while let Ok(first) = requests.recv() {
            let mut appends = Vec::new();
            let mut changes = Vec::new();
            let mut oldest = None;
            for request in std::iter::once(first).chain(requests.try_iter().take(MAX_REQUESTS - 1))
            {
                match request {
                    Request::Append {
                        entries,
                        ack,
                        reply,
                        queued_at,
                    } => {
                        if !entries.is_empty() {
                            oldest = Some(oldest.map_or(queued_at, |o: Instant| o.min(queued_at)));
                        }
                        appends.push(Append {
                            entries,
                            ack,
                            reply,
                        });
                    }
                    Request::Change { change, reply } => changes.push((change, reply)),
                }
            }
            let now = Instant::now();
            self.take(&appends, oldest, now);
            let mut written = self.write(appends, now);
            self.change(changes, &mut written);
            if !written.is_empty() {
                commit::sync(
                    &self.trees.db,
                    written,
                    &self.announce,
                    &self.notices,
                    &self.unsynced,
                    &self.sync_duration,
                );
            }
            self.admission.cycled(now.elapsed());
            self.numbers.sweep(now);
            self.channels.store(self.numbers.len(), Ordering::Relaxed);
        }
    }

    /// Tells admission how many appends were taken and how long the oldest
    /// waited (a flush, an empty append, is not counted).
    fn take(&self, appends: &[Append], oldest: Option<Instant>, now: Instant) {
        if let Some(oldest) = oldest {
            let counted = appends.iter().filter(|a| !a.entries.is_empty()).count();
            self.admission.taken(counted, oldest, now);
            self.queue_wait
                .record(now.saturating_duration_since(oldest).as_secs_f64());
        }
    }

    /// Makes each change; those that must be synced are answered after the
    /// sync, the others at once.
    fn change(&self, changes: Vec<(Change, ChangeReply)>, written: &mut Written) {
        for (change, reply) in changes {
            let outcome = change.apply(&self.trees).map_err(|e| {
                log::error!("cannot make a change to the store: {e}");
                StoreError::Storage(e.to_string())
            });
            if change.wants_sync() && outcome.is_ok() {
                written.changes.push((reply, outcome));
            } else {
                let _ = reply.send(outcome);
            }
        }
    }

    /// Stores every request's messages in one write, answers those that do
    /// not wait for the disk, and returns what is left to sync. The messages
    /// of durable requests are held from readers until that sync.
    fn write(&mut self, requests: Vec<Append>, now: Instant) -> Written {
        let mut written = Written::default();
        if requests.is_empty() {
            return written;
        }
        let mut staged = Staged::default();
        let outcome = self
            .stage_all(&requests, now, &mut staged)
            .and_then(|appended| {
                self.hold_durable(&requests, &appended);
                self.apply(&staged).map(|()| appended)
            });
        let appended = match outcome {
            Ok(appended) => appended,
            Err(e) => {
                log::error!("cannot store {} requests: {e}", requests.len());
                self.numbers.forget(staged.touched);
                for request in requests {
                    let _ = request.reply.send(Err(StoreError::Storage(e.clone())));
                }
                return written;
            }
        };
        for (request, appended) in requests.into_iter().zip(appended) {
            if request.ack == Ack::Synced {
                written.waiters.push((request.reply, appended));
            } else {
                let _ = request.reply.send(Ok(appended));
            }
        }
        written.stored = staged.stored;
        written
    }

    /// Hides the new messages of durable requests from readers until they are
    /// synced (those of requests that do not wait for the disk are readable
    /// once written: that mode promises less).
    fn hold_durable(&self, requests: &[Append], appended: &[Vec<Appended>]) {
        let held = requests
            .iter()
            .zip(appended)
            .filter(|(request, _)| request.ack == Ack::Synced)
            .flat_map(|(_, appended)| appended.iter().filter(|a| a.created))
            .map(|appended| (appended.message.channel, appended.message.id));
        self.unsynced.hold(held);
    }

    fn stage_all(
        &mut self,
        requests: &[Append],
        now: Instant,
        staged: &mut Staged,
    ) -> Result<Vec<Vec<Appended>>, String> {
        requests
            .iter()
            .map(|request| {
                request
                    .entries
                    .iter()
                    .map(|entry| self.stage(entry, now, staged))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    }

    /// Numbers one message and adds it (and its key) to the write, or finds the
    /// message its idempotency key already names.
    fn stage(
        &mut self,
        entry: &Entry,
        now: Instant,
        staged: &mut Staged,
    ) -> Result<Appended, sled::Error> {
        let channel = entry.channel;
        if let Some(key) = &entry.idempotency_key
            && !entry.key_is_new
            && let Some(earlier) = self.earlier(channel, key, staged)?
        {
            return Ok(earlier);
        }
        let trees = &self.trees;
        let id = self
            .numbers
            .next_id(channel, now, || trees.last_id(channel))?;
        staged.touched.push(channel);
        let message = new_entry(id, entry);
        if let Some(revision) = entry.revises {
            staged
                .revisions
                .push(revision_key(channel, revision.target, id));
        }
        let json = Bytes::from(serde_json::to_vec(&message).unwrap_or_default());
        let appended = Appended {
            message,
            json: json.clone(),
            created: true,
        };
        if let Some(key) = &entry.idempotency_key {
            staged
                .keys
                .insert(channel_key(channel, key), &id.to_be_bytes()[..]);
            let replay = Appended {
                created: false,
                ..appended.clone()
            };
            staged.new_keys.insert((channel, key.clone()), replay);
        }
        staged.stored.push(Stored { channel, id, json });
        Ok(appended)
    }

    /// The message an idempotency key names, from this write or the store.
    fn earlier(
        &self,
        channel: ChannelId,
        key: &str,
        staged: &Staged,
    ) -> Result<Option<Appended>, sled::Error> {
        if let Some(earlier) = staged.new_keys.get(&(channel, key.to_string())) {
            return Ok(Some(earlier.clone()));
        }
        let Some(id) = self.trees.idempotent_id(channel, key)? else {
            return Ok(None);
        };
        let stored = self.trees.messages.get(message_key(channel, id))?;
        Ok(stored.and_then(|json| {
            let message = decode(&json)?;
            Some(Appended {
                message,
                json: Bytes::from(json.to_vec()),
                created: false,
            })
        }))
    }

    /// Inserts the staged messages and keys. A message with an idempotency key
    /// goes in one atomic write with its key, an edit or deletion with its
    /// index entry: after a crash either both are in the store or neither is.
    /// Without keys or revisions there is nothing to keep together,
    /// so the messages go in one by one: sled's atomic writes wait for every
    /// flush in progress, and the next write would wait for the sync of the
    /// one before it. A crash then keeps a prefix of them: none was announced,
    /// nor answered as durable, before its sync.
    fn apply(&self, staged: &Staged) -> Result<(), String> {
        if staged.new_keys.is_empty() && staged.revisions.is_empty() {
            return staged
                .stored
                .iter()
                .try_for_each(|stored| {
                    self.trees
                        .messages
                        .insert(
                            &message_key(stored.channel, stored.id)[..],
                            stored.json.as_ref(),
                        )
                        .map(drop)
                })
                .map_err(|e| e.to_string());
        }
        let mut messages = sled::Batch::default();
        for stored in &staged.stored {
            messages.insert(
                &message_key(stored.channel, stored.id)[..],
                stored.json.as_ref(),
            );
        }
        let mut revisions = sled::Batch::default();
        for key in &staged.revisions {
            revisions.insert(&key[..], &[][..]);
        }
        let trees = (
            &self.trees.messages,
            &self.trees.idempotency,
            &self.trees.revisions,
        );
        trees
            .transaction(|(messages_tree, keys, revisions_tree)| {
                messages_tree.apply_batch(&messages)?;
                keys.apply_batch(&staged.keys)?;
                revisions_tree.apply_batch(&revisions)?;
                Ok(())
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => e.to_string(),
                TransactionError::Abort(()) => "the write was aborted".to_string(),
            })
    }
}

/// The log entry `entry` becomes as id `id`: a message, or an edit or
/// deletion of its target (a deletion keeps no text).
pub(crate) fn new_entry(id: u64, entry: &Entry) -> Message {
    let new = &entry.message;
    let mut message = Message {
        ts: Message::now_timestamp(),
        user: new.user.clone(),
        ..Message::new(
            id,
            entry.channel,
            new.author.as_str(),
            new.text.as_str(),
            "",
        )
    };
    if let Some(revision) = entry.revises {
        message.kind = revision.kind;
        message.target = Some(revision.target);
        if revision.kind == Kind::Delete {
            message.text.clear();
        }
    }
    message
}
