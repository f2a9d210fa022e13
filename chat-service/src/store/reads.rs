//! History reads, each capped at what a crash cannot take back.
//!
//! [`SyncedHistory`] is the only way to read messages out of the store: history
//! pages, single messages, stats, the outbox, and through them replay and
//! backfill for every stream. Each read takes the tree first, then drops what
//! the writer still holds as unsynced ([`Unsynced`]): a message written by a
//! durable append becomes readable when its sync succeeds, the same moment its
//! `201` is sent and it is announced to the publisher. A non-durable append
//! (`--durable-ack false`) is readable once written: that mode promises less.
//!
//! A read that races a write may come back a little short (the newest
//! messages it found were not synced yet); it is never wrong.
//!
//! Two views: the log as it was written (`after`, `latest`, `get`: every
//! entry, edits and deletions included, which is what streams replay), and
//! messages as they now are (`current_*`: only messages, each with its synced
//! edits and deletion applied, found through the revisions index).

use std::sync::Arc;

use bytes::Bytes;
use protocol::{ChannelId, Message};

use super::keys::{id_of_key, ids_of_revision_key, message_key, revision_key};
use super::trees::Trees;
use super::unsynced::Unsynced;
use super::{ChannelStats, decode};

/// Up to `limit` entries of `entries` that are messages (not edits or
/// deletions), in the order given.
fn only_messages(
    entries: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    limit: usize,
) -> Result<Vec<Message>, sled::Error> {
    let mut messages = Vec::new();
    for entry in entries {
        let (_, value) = entry?;
        if let Some(message) = decode(&value).filter(|message| message.kind.is_message()) {
            messages.push(message);
            if messages.len() >= limit {
                break;
            }
        }
    }
    Ok(messages)
}

/// Reads of the messages tree, capped per channel at the synced id.
#[derive(Clone)]
pub struct SyncedHistory {
    messages: sled::Tree,
    revisions: sled::Tree,
    unsynced: Arc<Unsynced>,
}

impl SyncedHistory {
    pub(super) fn new(trees: &Trees, unsynced: Arc<Unsynced>) -> Self {
        SyncedHistory {
            messages: trees.messages.clone(),
            revisions: trees.revisions.clone(),
            unsynced,
        }
    }

    /// Up to `limit` synced messages (not edits or deletions) with ids
    /// greater than `after`, ascending, as they now are.
    pub fn current_after(
        &self,
        channel: ChannelId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, sled::Error> {
        let bound = self.unsynced.readable_through(channel);
        if after >= bound {
            return Ok(Vec::new());
        }
        let range = message_key(channel, after.saturating_add(1))..=message_key(channel, bound);
        let mut page = only_messages(self.messages.range(range), limit)?;
        let synced = self.unsynced.readable_through(channel);
        page.retain(|message| message.id <= synced);
        self.revise(channel, page)
    }

    /// The last `limit` synced messages (not edits or deletions) of the
    /// channel, ascending, as they now are.
    pub fn current_latest(
        &self,
        channel: ChannelId,
        limit: usize,
    ) -> Result<Vec<Message>, sled::Error> {
        let newest = |through: u64| {
            let range = message_key(channel, 0)..=message_key(channel, through);
            only_messages(self.messages.range(range).rev(), limit)
        };
        let bound = self.unsynced.readable_through(channel);
        let mut newest_first = newest(bound)?;
        let synced = self.unsynced.readable_through(channel);
        if newest_first.iter().any(|message| message.id > synced) {
            // As in `latest`: a write began during the read.
            newest_first = newest(synced)?;
        }
        newest_first.reverse();
        self.revise(channel, newest_first)
    }

    /// One synced entry by id: a message as it now is, or an edit or
    /// deletion as it was written.
    pub fn current_get(&self, channel: ChannelId, id: u64) -> Result<Option<Message>, sled::Error> {
        let Some(entry) = self.get(channel, id)? else {
            return Ok(None);
        };
        if !entry.kind.is_message() {
            return Ok(Some(entry));
        }
        Ok(self.revise(channel, vec![entry])?.pop())
    }

    /// Every synced entry of `channel` (of every channel with `None`) that
    /// `keep` accepts, in key order: a whole scan, for erasure.
    pub fn matching(
        &self,
        channel: Option<ChannelId>,
        keep: impl Fn(&Message) -> bool,
    ) -> Result<Vec<Message>, sled::Error> {
        let entries = match channel {
            Some(channel) => self.messages.scan_prefix(channel.as_bytes()),
            None => self.messages.iter(),
        };
        let mut found = Vec::new();
        for entry in entries {
            let (_, value) = entry?;
            if let Some(message) = decode(&value).filter(|message| keep(message)) {
                found.push(message);
            }
        }
        found.retain(|message| message.id <= self.unsynced.readable_through(message.channel));
        Ok(found)
    }

    /// The synced edits and deletions of message `target`, in log order.
    pub fn revisions_of(
        &self,
        channel: ChannelId,
        target: u64,
    ) -> Result<Vec<Message>, sled::Error> {
        let revisions = self.revisions_between(channel, target, target)?;
        Ok(revisions.into_iter().map(|(_, entry)| entry).collect())
    }

    /// `page` (messages ascending by id) with every synced edit and deletion
    /// of them applied, in log order.
    fn revise(
        &self,
        channel: ChannelId,
        mut page: Vec<Message>,
    ) -> Result<Vec<Message>, sled::Error> {
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            return Ok(page);
        };
        for (target, change) in self.revisions_between(channel, first.id, last.id)? {
            if let Ok(at) = page.binary_search_by_key(&target, |message| message.id) {
                page[at].revise(&change);
            }
        }
        Ok(page)
    }

    /// The synced edits and deletions of the messages `first..=last`, each
    /// with its target, by target and then in log order. The index is read
    /// before the hold is asked, as the messages tree is.
    fn revisions_between(
        &self,
        channel: ChannelId,
        first: u64,
        last: u64,
    ) -> Result<Vec<(u64, Message)>, sled::Error> {
        let range = revision_key(channel, first, 0)..=revision_key(channel, last, u64::MAX);
        let revisions = self
            .revisions
            .range(range)
            .keys()
            .map(|key| key.map(|key| ids_of_revision_key(&key)))
            .collect::<Result<Vec<_>, _>>()?;
        let synced = self.unsynced.readable_through(channel);
        let mut entries = Vec::new();
        for (target, revision) in revisions.into_iter().filter(|(_, rev)| *rev <= synced) {
            if let Some(entry) = self.messages.get(message_key(channel, revision))? {
                entries.extend(decode(&entry).map(|entry| (target, entry)));
            }
        }
        Ok(entries)
    }

    /// Up to `limit` synced messages with ids greater than `after`, ascending.
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

    /// Like [`SyncedHistory::after`], but the stored JSON as it is, with its id:
    /// what the outbox re-publishes.
    pub fn after_raw(
        &self,
        channel: ChannelId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Bytes)>, sled::Error> {
        let bound = self.unsynced.readable_through(channel);
        if after >= bound {
            return Ok(Vec::new());
        }
        let range = message_key(channel, after.saturating_add(1))..=message_key(channel, bound);
        let mut page = self
            .messages
            .range(range)
            .take(limit)
            .map(|entry| entry.map(|(key, value)| (id_of_key(&key), Bytes::from(value.to_vec()))))
            .collect::<Result<Vec<_>, _>>()?;
        let synced = self.unsynced.readable_through(channel);
        page.retain(|(id, _)| *id <= synced);
        Ok(page)
    }

    /// The last `limit` synced messages of the channel, ascending.
    pub fn latest(&self, channel: ChannelId, limit: usize) -> Result<Vec<Message>, sled::Error> {
        let bound = self.unsynced.readable_through(channel);
        let mut newest_first = self.newest_first(channel, bound, limit)?;
        let synced = self.unsynced.readable_through(channel);
        if newest_first.iter().any(|(key, _)| id_of_key(key) > synced) {
            // A write began during the read: the newest entries taken may be
            // unsynced, and dropping them would leave fewer than `limit` (none
            // for the newest id alone). Every id up to the hold is written and
            // synced, so the newest `limit` of those are read again.
            newest_first = self.newest_first(channel, synced, limit)?;
        }
        Ok(newest_first
            .iter()
            .rev()
            .filter_map(|(_, value)| decode(value))
            .collect())
    }

    /// The channel's entries with ids up to `through`, newest first, at most `limit`.
    fn newest_first(
        &self,
        channel: ChannelId,
        through: u64,
        limit: usize,
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, sled::Error> {
        let range = message_key(channel, 0)..=message_key(channel, through);
        self.messages.range(range).rev().take(limit).collect()
    }

    /// How many synced messages the channel holds, and their first and last ids.
    pub fn channel_stats(&self, channel: ChannelId) -> Result<ChannelStats, sled::Error> {
        let bound = self.unsynced.readable_through(channel);
        let ids = self
            .messages
            .range(message_key(channel, 0)..=message_key(channel, bound))
            .keys()
            .map(|key| key.map(|key| id_of_key(&key)))
            .collect::<Result<Vec<_>, _>>()?;
        let synced = self.unsynced.readable_through(channel);
        let mut ids = ids.into_iter().filter(|id| *id <= synced);
        let first_id = ids.next();
        let (count, last_id) = ids.fold((u64::from(first_id.is_some()), first_id), |(n, _), id| {
            (n + 1, Some(id))
        });
        Ok(ChannelStats {
            messages: count,
            first_id,
            last_id,
        })
    }

    /// One synced message by id.
    pub fn get(&self, channel: ChannelId, id: u64) -> Result<Option<Message>, sled::Error> {
        let value = self.messages.get(message_key(channel, id))?;
        if id > self.unsynced.readable_through(channel) {
            return Ok(None);
        }
        Ok(value.and_then(|value| decode(&value)))
    }
}
