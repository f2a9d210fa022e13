//! The sled store.
//!
//! Trees: `messages` keyed `channel ++ id` (one channel's history is one ordered
//! range), `idempotency` (`channel ++ key` → id), and two per-channel watermarks:
//! `published` (every id up to it was acknowledged by the broker; the ids above it
//! are the outbox) and `trimmed` (every id up to it was removed by retention).

mod commit;
mod keys;
mod numbering;
pub mod retention;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use protocol::{ChannelId, Message};

use commit::GroupCommitter;
pub use commit::{AfterWrite, FlushError, Stopped};
use keys::{decode_u64, id_of_key, message_key};
use numbering::LastIds;

use crate::domain::NewMessage;

/// Cheap-to-clone handle to the store, shared by every request.
#[derive(Clone)]
pub struct History {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    messages: sled::Tree,
    idempotency: sled::Tree,
    published: sled::Tree,
    trimmed: sled::Tree,
    /// Last id given out, for every channel in the store (loaded at open), under
    /// std mutexes that each number a share of the channels: a channel's is held
    /// only for its append and never across an `.await`, and holding it while the
    /// message is queued for the broker is what keeps publish order equal to id
    /// order.
    last_ids: LastIds,
    committer: GroupCommitter,
}

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
        let published = db.open_tree("published")?;
        let trimmed = db.open_tree("trimmed")?;
        let last_ids = load_last_ids(&messages, &trimmed)?;
        let committer = GroupCommitter::start(db.clone())?;
        Ok(History {
            inner: Arc::new(Inner {
                db,
                committer,
                messages,
                idempotency,
                published,
                trimmed,
                last_ids: LastIds::new(last_ids),
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
        let mut last_ids = self.inner.last_ids.lock(channel);
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
        let id = last_ids.get(&channel).copied().unwrap_or(0) + 1;
        let message = Message {
            id,
            channel,
            author: new.author.as_str().to_string(),
            text: new.text.as_str().to_string(),
            ts: Message::now_timestamp(),
            user: new.user.clone(),
        };
        let json = Bytes::from(serde_json::to_vec(&message).unwrap_or_default());
        self.inner
            .messages
            .insert(message_key(channel, id), json.as_ref())?;
        if let Some(key) = idempotency_key {
            self.inner
                .idempotency
                .insert(keys::idempotency_key(channel, key), &id.to_be_bytes())?;
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
        self.inner.committer.flush().await
    }

    /// Runs `work` on the flush thread once everything appended so far is
    /// written to the file, so that it survives the process being killed
    /// (usually before it is synced to disk); calls run in the order they were
    /// made.
    pub fn after_write(&self, work: AfterWrite) -> Result<(), Stopped> {
        self.inner.committer.after_write(work)
    }

    /// Up to `limit` messages with ids greater than `after`, ascending.
    pub fn after(
        &self,
        channel: ChannelId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, sled::Error> {
        Ok(self
            .after_raw(channel, after, limit)?
            .iter()
            .filter_map(|(_, json)| decode(json))
            .collect())
    }

    /// Like [`History::after`], but the stored JSON as it is, with its id: what the
    /// outbox re-publishes.
    pub fn after_raw(
        &self,
        channel: ChannelId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Bytes)>, sled::Error> {
        let start = message_key(channel, after.saturating_add(1));
        let end = message_key(channel, u64::MAX);
        self.inner
            .messages
            .range(start..=end)
            .take(limit)
            .map(|entry| entry.map(|(key, value)| (id_of_key(&key), Bytes::from(value.to_vec()))))
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

    /// Another tree of the same database (bans live next to history).
    pub fn open_tree(&self, name: &str) -> Result<sled::Tree, sled::Error> {
        self.inner.db.open_tree(name)
    }

    /// Whether the store answers: used by `/readyz`.
    pub fn is_healthy(&self) -> bool {
        self.inner.messages.first().is_ok()
    }

    /// The last id given out in every channel the store holds.
    pub fn last_ids(&self) -> HashMap<ChannelId, u64> {
        self.inner.last_ids.snapshot()
    }

    /// Per channel, the id up to which the broker acknowledged every message.
    pub fn published_watermarks(&self) -> Result<HashMap<ChannelId, u64>, sled::Error> {
        watermarks(&self.inner.published)
    }

    /// Records that the broker acknowledged every message of `channel` up to `id`.
    /// Not flushed on its own: losing it in a crash only means re-publishing
    /// messages subscribers already have, and they drop those by id.
    pub fn set_published_through(&self, channel: ChannelId, id: u64) -> Result<(), sled::Error> {
        self.inner
            .published
            .insert(channel.as_bytes(), &id.to_be_bytes())?;
        Ok(())
    }

    /// Every id of `channel` up to this one was removed by retention (0: none).
    pub fn trimmed_through(&self, channel: ChannelId) -> Result<u64, sled::Error> {
        Ok(self
            .inner
            .trimmed
            .get(channel.as_bytes())?
            .map_or(0, |value| decode_u64(&value)))
    }

    fn find_idempotent(
        &self,
        channel: ChannelId,
        key: &str,
    ) -> Result<Option<Message>, sled::Error> {
        let tree_key = keys::idempotency_key(channel, key);
        let Some(id) = self.inner.idempotency.get(tree_key)? else {
            return Ok(None);
        };
        self.get(channel, decode_u64(&id))
    }
}

/// The last id of every channel: its newest stored message, or what retention
/// removed when nothing newer is left, so numbering never restarts.
fn load_last_ids(
    messages: &sled::Tree,
    trimmed: &sled::Tree,
) -> Result<HashMap<ChannelId, u64>, sled::Error> {
    let mut last_ids = watermarks(trimmed)?;
    let mut start = [0u8; keys::CHANNEL_LEN];
    while let Some((key, _)) = messages.range(start..).next().transpose()? {
        let Some(channel) = keys::channel_of_key(&key) else {
            break;
        };
        if let Some((newest, _)) = messages
            .scan_prefix(channel.as_bytes())
            .next_back()
            .transpose()?
        {
            let last = last_ids.entry(channel).or_insert(0);
            *last = (*last).max(id_of_key(&newest));
        }
        match keys::next_channel_start(channel) {
            Some(next) => start = next,
            None => break,
        }
    }
    Ok(last_ids)
}

fn watermarks(tree: &sled::Tree) -> Result<HashMap<ChannelId, u64>, sled::Error> {
    tree.iter()
        .map(|entry| entry.map(|(key, value)| (keys::channel_of_key(&key), decode_u64(&value))))
        .filter_map(|entry| match entry {
            Ok((Some(channel), id)) => Some(Ok((channel, id))),
            Ok((None, _)) => None,
            Err(e) => Some(Err(e)),
        })
        .collect()
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
    use std::sync::Mutex;

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
    fn concurrent_appends_number_each_channel_without_gaps_and_queue_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let history = History::open(dir.path()).expect("open");
        let queued = Mutex::new(HashMap::<ChannelId, Vec<u64>>::new());
        std::thread::scope(|scope| {
            for worker in 0..4u8 {
                let (history, queued) = (&history, &queued);
                scope.spawn(move || {
                    for n in 0..200u8 {
                        let channel = channel((worker + n) % 8);
                        let record = |message: &Message, _: &Bytes| {
                            let mut queued = queued.lock().expect("lock");
                            queued.entry(channel).or_default().push(message.id);
                        };
                        history
                            .append(channel, &new_message("x"), None, record)
                            .expect("append");
                    }
                });
            }
        });
        let queued = queued.into_inner().expect("lock");
        assert_eq!(queued.len(), 8);
        for (channel, ids) in queued {
            let expected: Vec<u64> = (1..=ids.len() as u64).collect();
            assert_eq!(ids, expected, "{channel}: ids in order, no gap");
            assert_eq!(history.last_ids()[&channel], ids.len() as u64);
        }
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
