//! The database and its trees, opened once; only the store's writer thread
//! writes them (see [`super::changes`] and the writer).

use std::collections::HashMap;
use std::path::Path;

use protocol::ChannelId;

use super::keys::{self, decode_u64, id_of_key};

/// The database and its trees (each a cheap handle).
#[derive(Clone)]
pub(crate) struct Trees {
    pub(super) db: sled::Db,
    pub(super) messages: sled::Tree,
    /// Index of edits and deletions: `channel ++ target ++ revision` → nothing.
    pub(super) revisions: sled::Tree,
    pub(super) idempotency: sled::Tree,
    pub(super) published: sled::Tree,
    pub(super) trimmed: sled::Tree,
    pub(super) bans: sled::Tree,
    /// The store's own facts: its node id, whether a compaction is owed.
    pub(super) meta: sled::Tree,
    /// Per webhook and channel, the last id the app acknowledged (see
    /// [`super::cursors`]).
    pub(super) webhooks: sled::Tree,
}

/// In `meta`: an erasure rewrote entries, and the old versions may still be
/// in sled's files until the store is compacted.
const COMPACTION_OWED: &[u8] = b"compaction_owed";

impl Trees {
    /// Opens the database with a page cache of `cache_bytes`, and syncs what
    /// recovery found: it may sit in the OS's cache only, and nothing read
    /// may be undone by a later crash.
    pub(super) fn open(dir: &Path, cache_bytes: u64) -> Result<Self, sled::Error> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()?;
        let trees = Trees {
            messages: db.open_tree("messages")?,
            revisions: db.open_tree("revisions")?,
            idempotency: db.open_tree("idempotency")?,
            published: db.open_tree("published")?,
            trimmed: db.open_tree("trimmed")?,
            bans: db.open_tree("bans")?,
            meta: db.open_tree("meta")?,
            webhooks: db.open_tree("webhooks")?,
            db,
        };
        trees.db.flush()?;
        Ok(trees)
    }

    /// The store's node id, made and synced on first use.
    pub(super) fn node_id(&self) -> Result<uuid::Uuid, sled::Error> {
        const KEY: &[u8] = b"node_id";
        let meta = &self.meta;
        if let Some(bytes) = meta.get(KEY)?
            && let Ok(id) = uuid::Uuid::from_slice(&bytes)
        {
            return Ok(id);
        }
        let id = uuid::Uuid::new_v4();
        meta.insert(KEY, id.as_bytes())?;
        meta.flush()?;
        Ok(id)
    }

    /// Records that the store must be compacted (see [`super::compaction`]).
    pub(super) fn owe_compaction(&self) -> Result<(), sled::Error> {
        self.meta.insert(COMPACTION_OWED, &[1][..]).map(drop)
    }

    pub(super) fn compaction_owed(&self) -> Result<bool, sled::Error> {
        self.meta.contains_key(COMPACTION_OWED)
    }

    /// The store at `dir`, compacted first if an erasure asked for it, after
    /// finishing any compaction a crash interrupted.
    pub(super) fn open_compacted(dir: &Path, cache_bytes: u64) -> Result<Self, sled::Error> {
        super::compaction::recover(dir)?;
        let trees = Trees::open(dir, cache_bytes)?;
        if !trees.compaction_owed()? {
            return Ok(trees);
        }
        let db = trees.db.clone();
        drop(trees);
        super::compaction::rewrite(db, dir, |copy| {
            copy.open_tree("meta")?.remove(COMPACTION_OWED).map(drop)
        })?;
        Trees::open(dir, cache_bytes)
    }

    /// The last id given out in `channel`: its newest stored message, or what
    /// retention removed when nothing newer is left, so numbering never restarts.
    pub(super) fn last_id(&self, channel: ChannelId) -> Result<u64, sled::Error> {
        let newest = self
            .messages
            .scan_prefix(channel.as_bytes())
            .keys()
            .next_back()
            .transpose()?
            .map_or(0, |key| id_of_key(&key));
        Ok(newest.max(self.trimmed_through(channel)?))
    }

    pub(super) fn trimmed_through(&self, channel: ChannelId) -> Result<u64, sled::Error> {
        let value = self.trimmed.get(channel.as_bytes())?;
        Ok(value.map_or(0, |value| decode_u64(&value)))
    }

    /// The last id of every channel, stepping from one channel's range to the next.
    pub(super) fn last_ids(&self) -> Result<HashMap<ChannelId, u64>, sled::Error> {
        let mut last_ids = watermarks(&self.trimmed)?;
        let mut start = [0u8; keys::CHANNEL_LEN];
        while let Some((key, _)) = self.messages.range(start..).next().transpose()? {
            let Some(channel) = keys::channel_of_key(&key) else {
                break;
            };
            last_ids.insert(channel, self.last_id(channel)?);
            match keys::next_channel_start(channel) {
                Some(next) => start = next,
                None => break,
            }
        }
        Ok(last_ids)
    }

    /// The id an idempotency key of `channel` points at, if any.
    pub(super) fn idempotent_id(
        &self,
        channel: ChannelId,
        key: &str,
    ) -> Result<Option<u64>, sled::Error> {
        let value = self.idempotency.get(keys::channel_key(channel, key))?;
        Ok(value.map(|id| decode_u64(&id)))
    }
}

pub(super) fn watermarks(tree: &sled::Tree) -> Result<HashMap<ChannelId, u64>, sled::Error> {
    tree.iter()
        .map(|entry| entry.map(|(key, value)| (keys::channel_of_key(&key), decode_u64(&value))))
        .filter_map(|entry| match entry {
            Ok((Some(channel), id)) => Some(Ok((channel, id))),
            Ok((None, _)) => None,
            Err(e) => Some(Err(e)),
        })
        .collect()
}
