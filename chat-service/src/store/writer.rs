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
use protocol::metrics::names;
use protocol::{ChannelId, Message};
use sled::Transactional;
use sled::transaction::TransactionError;
use tokio::sync::{mpsc, oneshot};

use super::commit::{self, Written};
use super::keys::{idempotency_key, message_key};
use super::numbers::Numbers;
use super::{Appended, Entry, StoreError, StoreSettings, Stored, Trees, decode};

/// Requests taken into one write at most, so one batch stays a bounded size.
const MAX_REQUESTS: usize = 512;

/// Told the outcome of an append request.
pub(super) type Reply = oneshot::Sender<Result<Vec<Appended>, StoreError>>;

/// An append request: an empty one only waits for a flush.
pub(super) struct Request {
    pub entries: Vec<Entry>,
    pub durable: bool,
    pub reply: Reply,
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
) -> std::io::Result<(SyncSender<Request>, Threads)> {
    let (ingest, requests) = sync_channel(settings.ingest_queue.max(1));
    let channels = Arc::new(AtomicUsize::new(0));
    let writer = Writer {
        trees,
        numbers: Numbers::new(settings.idle_channel),
        announce,
        sync_duration: metrics::histogram!(names::STORE_COMMIT_DURATION),
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
    sync_duration: metrics::Histogram,
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
    touched: Vec<ChannelId>,
}

impl Writer {
    fn run(mut self, requests: &Receiver<Request>) {
        while let Ok(first) = requests.recv() {
            let batch: Vec<Request> = std::iter::once(first)
                .chain(requests.try_iter().take(MAX_REQUESTS - 1))
                .collect();
            let now = Instant::now();
            if let Some(written) = self.write(batch, now) {
                commit::sync(&self.trees.db, written, &self.announce, &self.sync_duration);
            }
            self.numbers.sweep(now);
            self.channels.store(self.numbers.len(), Ordering::Relaxed);
        }
    }

    /// Stores every request's messages in one atomic write, answers those that
    /// do not wait for the disk, and returns what is left to sync.
    fn write(&mut self, requests: Vec<Request>, now: Instant) -> Option<Written> {
        let mut staged = Staged::default();
        let outcome = self
            .stage_all(&requests, now, &mut staged)
            .and_then(|appended| self.apply(&staged).map(|()| appended));
        let appended = match outcome {
            Ok(appended) => appended,
            Err(e) => {
                log::error!("cannot store {} requests: {e}", requests.len());
                self.numbers.forget(staged.touched);
                for request in requests {
                    let _ = request.reply.send(Err(StoreError::Storage(e.clone())));
                }
                return None;
            }
        };
        let mut waiters = Vec::new();
        for (request, appended) in requests.into_iter().zip(appended) {
            if request.durable {
                waiters.push((request.reply, appended));
            } else {
                let _ = request.reply.send(Ok(appended));
            }
        }
        let nothing_to_sync = staged.stored.is_empty() && waiters.is_empty();
        (!nothing_to_sync).then_some(Written {
            stored: staged.stored,
            waiters,
        })
    }

    fn stage_all(
        &mut self,
        requests: &[Request],
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
        let message = Message {
            id,
            channel,
            author: entry.message.author.as_str().to_string(),
            text: entry.message.text.as_str().to_string(),
            ts: Message::now_timestamp(),
            user: entry.message.user.clone(),
        };
        let json = Bytes::from(serde_json::to_vec(&message).unwrap_or_default());
        let appended = Appended {
            message,
            json: json.clone(),
            created: true,
        };
        if let Some(key) = &entry.idempotency_key {
            staged
                .keys
                .insert(idempotency_key(channel, key), &id.to_be_bytes()[..]);
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
    /// goes in one atomic write with its key: after a crash either both are in
    /// the store or neither is. Without keys there is nothing to keep together,
    /// so the messages go in one by one: sled's atomic writes wait for every
    /// flush in progress, and the next write would wait for the sync of the
    /// one before it. A crash then keeps a prefix of them: none was announced,
    /// nor answered as durable, before its sync.
    fn apply(&self, staged: &Staged) -> Result<(), String> {
        if staged.new_keys.is_empty() {
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
        let trees = (&self.trees.messages, &self.trees.idempotency);
        trees
            .transaction(|(messages_tree, keys)| {
                messages_tree.apply_batch(&messages)?;
                keys.apply_batch(&staged.keys)?;
                Ok(())
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => e.to_string(),
                TransactionError::Abort(()) => "the write was aborted".to_string(),
            })
    }
}
