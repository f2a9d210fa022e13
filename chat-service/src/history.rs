//! The sled store: one tree of messages keyed `channel (16 bytes) ++ id (u64 BE)`,
//! so a channel's history is one ordered range, and a tree of idempotency keys.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use protocol::{ChannelId, Message};
use tokio::sync::oneshot;

use crate::domain::NewMessage;

const KEY_LEN: usize = 24;

/// Cheap-to-clone handle to the store, shared by every request.
#[derive(Clone)]
pub struct History {
    inner: Arc<Inner>,
}

struct Inner {
    messages: sled::Tree,
    idempotency: sled::Tree,
    /// Last id given out per channel. A std mutex: it is held only for the
    /// in-memory insert and never across an `.await`, and holding it while the
    /// message is queued for the broker is what keeps publish order equal to id order.
    last_ids: Mutex<HashMap<ChannelId, u64>>,
    committer: GroupCommitter,
}

/// Told the outcome of the flush that covered its writes.
type FlushWaiter = oneshot::Sender<Result<(), String>>;

/// The outcome of an append: the stored message, its JSON, and whether it is new
/// (`false` when an idempotency key matched an earlier message).
#[derive(Debug, Clone)]
pub struct Appended {
    pub message: Message,
    pub json: Bytes,
    pub created: bool,
}

impl History {
    pub fn open(dir: &Path) -> Result<Self, sled::Error> {
        let db = sled::Config::new().path(dir).open()?;
        let messages = db.open_tree("messages")?;
        let idempotency = db.open_tree("idempotency")?;
        let committer = GroupCommitter::start(db)?;
        Ok(History {
            inner: Arc::new(Inner {
                committer,
                messages,
                idempotency,
                last_ids: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Gives `new` the channel's next id and stores it. `on_stored` runs while the
    /// channel's numbering is still held, so whatever it queues is in id order.
    pub fn append(
        &self,
        channel: ChannelId,
        new: &NewMessage,
        idempotency_key: Option<&str>,
        on_stored: impl FnOnce(&Message, &Bytes),
    ) -> Result<Appended, sled::Error> {
        let mut last_ids = self.lock_last_ids();
        if let Some(key) = idempotency_key
            && let Some(earlier) = self.find_idempotent(channel, key)?
        {
            let json = Bytes::from(serde_json::to_vec(&earlier).unwrap_or_default());
            return Ok(Appended {
                message: earlier,
                json,
                created: false,
            });
        }
        let id = self.last_id(&mut last_ids, channel)? + 1;
        let message = Message {
            id,
            channel,
            author: new.author.as_str().to_string(),
            text: new.text.as_str().to_string(),
            ts: Message::now_timestamp(),
            user: None,
        };
        let json = Bytes::from(serde_json::to_vec(&message).unwrap_or_default());
        self.inner
            .messages
            .insert(message_key(channel, id), json.as_ref())?;
        if let Some(key) = idempotency_key {
            self.inner
                .idempotency
                .insert(idempotency_tree_key(channel, key), &id.to_be_bytes())?;
        }
        last_ids.insert(channel, id);
        on_stored(&message, &json);
        Ok(Appended {
            message,
            json,
            created: true,
        })
    }

    /// Waits until everything appended so far is on disk. Concurrent callers share
    /// one flush (group commit).
    pub async fn flush(&self) -> Result<(), FlushError> {
        let (waiter, outcome) = oneshot::channel();
        self.inner.committer.request(waiter)?;
        match outcome.await {
            Ok(result) => result.map_err(FlushError),
            Err(_) => Err(FlushError("the flush thread has stopped".into())),
        }
    }

    /// Up to `limit` messages with ids greater than `after`, ascending.
    pub fn after(
        &self,
        channel: ChannelId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, sled::Error> {
        let start = message_key(channel, after.saturating_add(1));
        let end = message_key(channel, u64::MAX);
        self.inner
            .messages
            .range(start..=end)
            .take(limit)
            .map(|entry| entry.map(|(_, value)| decode(&value)))
            .filter_map(Result::transpose)
            .collect()
    }

    /// The last `limit` messages of the channel, ascending.
    pub fn latest(&self, channel: ChannelId, limit: usize) -> Result<Vec<Message>, sled::Error> {
        let mut newest_first: Vec<Message> = self
            .inner
            .messages
            .scan_prefix(channel.as_bytes())
            .rev()
            .take(limit)
            .map(|entry| entry.map(|(_, value)| decode(&value)))
            .filter_map(Result::transpose)
            .collect::<Result<_, _>>()?;
        newest_first.reverse();
        Ok(newest_first)
    }

    pub fn get(&self, channel: ChannelId, id: u64) -> Result<Option<Message>, sled::Error> {
        let value = self.inner.messages.get(message_key(channel, id))?;
        Ok(value.and_then(|value| decode(&value)))
    }

    /// Whether the store answers: used by `/readyz`.
    pub fn is_healthy(&self) -> bool {
        self.inner.messages.first().is_ok()
    }

    fn lock_last_ids(&self) -> MutexGuard<'_, HashMap<ChannelId, u64>> {
        // A panic while holding the lock cannot leave the map inconsistent (it is
        // written after the store succeeds), so a poisoned lock is still usable.
        self.inner
            .last_ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn last_id(
        &self,
        cache: &mut HashMap<ChannelId, u64>,
        channel: ChannelId,
    ) -> Result<u64, sled::Error> {
        if let Some(id) = cache.get(&channel) {
            return Ok(*id);
        }
        let last = self
            .inner
            .messages
            .scan_prefix(channel.as_bytes())
            .next_back();
        let id = match last.transpose()? {
            Some((key, _)) => id_of_key(&key),
            None => 0,
        };
        cache.insert(channel, id);
        Ok(id)
    }

    fn find_idempotent(
        &self,
        channel: ChannelId,
        key: &str,
    ) -> Result<Option<Message>, sled::Error> {
        let Some(id) = self
            .inner
            .idempotency
            .get(idempotency_tree_key(channel, key))?
        else {
            return Ok(None);
        };
        let id = u64::from_be_bytes(id.as_ref().try_into().unwrap_or([0; 8]));
        self.get(channel, id)
    }
}

/// A flush that failed; the cause is sled's, as text (sled's error is not `Clone`,
/// and one flush answers many waiters).
#[derive(Debug, Clone, thiserror::Error)]
#[error("flush to disk failed: {0}")]
pub struct FlushError(pub String);

/// One thread owns flushing: it takes every waiting request, flushes once, and
/// answers them all. Only one flush is ever in flight — sled 0.34's `flush_async`
/// deadlocks its own thread pool when many run at once.
struct GroupCommitter {
    requests: Option<std::sync::mpsc::Sender<FlushWaiter>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GroupCommitter {
    fn start(db: sled::Db) -> Result<Self, sled::Error> {
        let (requests, waiting) = std::sync::mpsc::channel::<FlushWaiter>();
        let thread = std::thread::Builder::new()
            .name("sled-group-commit".into())
            .spawn(move || {
                while let Ok(first) = waiting.recv() {
                    let mut waiters = vec![first];
                    waiters.extend(waiting.try_iter());
                    let outcome = db.flush().map(|_| ()).map_err(|e| e.to_string());
                    for waiter in waiters {
                        let _ = waiter.send(outcome.clone());
                    }
                }
            })?;
        Ok(GroupCommitter {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    fn request(&self, waiter: FlushWaiter) -> Result<(), FlushError> {
        self.requests
            .as_ref()
            .and_then(|requests| requests.send(waiter).ok())
            .ok_or_else(|| FlushError("the flush thread has stopped".into()))
    }
}

impl Drop for GroupCommitter {
    /// Ends the thread and waits for it, so the database (and its file lock) is
    /// released when the `History` is gone and can be reopened at once.
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn message_key(channel: ChannelId, id: u64) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    key[..16].copy_from_slice(channel.as_bytes());
    key[16..].copy_from_slice(&id.to_be_bytes());
    key
}

fn id_of_key(key: &[u8]) -> u64 {
    key.get(16..KEY_LEN)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

fn idempotency_tree_key(channel: ChannelId, key: &str) -> Vec<u8> {
    let mut tree_key = channel.as_bytes().to_vec();
    tree_key.extend_from_slice(key.as_bytes());
    tree_key
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
mod tests {
    use super::*;
    use crate::config::Limits;

    fn new_message(text: &str) -> NewMessage {
        NewMessage::parse(Some("ann"), Some(text), &Limits::default()).expect("valid")
    }

    fn channel(n: u8) -> ChannelId {
        ChannelId::from_bytes([n; 16])
    }

    #[test]
    fn ids_count_per_channel_and_continue_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let history = History::open(dir.path()).expect("open");
            for expected in 1..=3 {
                let appended = history
                    .append(channel(1), &new_message("x"), None, |_, _| {})
                    .expect("append");
                assert_eq!(appended.message.id, expected);
            }
            let other = history
                .append(channel(2), &new_message("y"), None, |_, _| {})
                .expect("append");
            assert_eq!(other.message.id, 1, "channels number independently");
        }
        let history = History::open(dir.path()).expect("reopen");
        let next = history
            .append(channel(1), &new_message("z"), None, |_, _| {})
            .expect("append");
        assert_eq!(next.message.id, 4);
    }

    #[test]
    fn after_and_latest_page_in_ascending_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let history = History::open(dir.path()).expect("open");
        for n in 0..5 {
            history
                .append(channel(1), &new_message(&n.to_string()), None, |_, _| {})
                .expect("append");
        }
        let ids = |messages: Vec<Message>| messages.iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(history.after(channel(1), 2, 2).expect("after")), [3, 4]);
        assert_eq!(ids(history.latest(channel(1), 2).expect("latest")), [4, 5]);
        assert!(history.after(channel(2), 0, 10).expect("after").is_empty());
    }

    #[test]
    fn idempotency_key_returns_the_original_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let history = History::open(dir.path()).expect("open");
        let first = history
            .append(channel(1), &new_message("a"), Some("k1"), |_, _| {})
            .expect("append");
        let mut republished = false;
        let retry = history
            .append(channel(1), &new_message("b"), Some("k1"), |_, _| {
                republished = true
            })
            .expect("append");
        assert!(!retry.created);
        assert!(!republished, "a retry is not published again");
        assert_eq!(retry.message, first.message);
        assert_eq!(history.latest(channel(1), 10).expect("latest").len(), 1);
    }
}
