//! Writes to the store besides appends: bans, retention, the publisher's
//! watermarks and the webhooks' cursors. Each is a request to the writer thread like an append, so the
//! writer is the one thread that changes sled, and no sled write runs on a
//! runtime thread that carries connections.

use std::collections::{HashMap, HashSet};

use protocol::{ChannelId, Message};

use super::Trees;
use super::keys::{self, decode_u64, message_key};

/// Keys removed per trim request, so one request never holds up appends for
/// long nor builds a huge batch; retention asks again while a request fills it.
pub const TRIM_BATCH: usize = 10_000;

/// One change, made by the writer thread.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Per channel, every id up to this one was acknowledged by the broker.
    Published(Vec<(ChannelId, u64)>),
    /// Bans `name` on `channel` until `expires_at` (seconds since the Unix
    /// epoch), or lifts the ban with `None`.
    Ban {
        channel: ChannelId,
        name: String,
        expires_at: Option<u64>,
    },
    /// Retention: every id of `channel` up to `through` goes.
    Trim { channel: ChannelId, through: u64 },
    /// Erasure: each entry is stored again as given (without its text), the
    /// idempotency keys that name one are dropped, and a compaction is owed.
    Erase(Vec<Message>),
    /// Per channel, every id up to this one was delivered to the webhook
    /// `hook` (or is not for it); `register` also records that the webhook
    /// is known, so a restart does not take it for a new one.
    WebhookCursors {
        hook: u64,
        cursors: Vec<(ChannelId, u64)>,
        register: bool,
    },
}

impl Change {
    /// Makes the change. Answers, by change: `Published` and `WebhookCursors` 0; `Ban` the expiry
    /// of the ban it replaced or lifted (0: none); `Trim` the messages removed
    /// (at most [`TRIM_BATCH`]); `Erase` the entries rewritten.
    pub fn apply(&self, trees: &Trees) -> Result<u64, sled::Error> {
        match self {
            Change::Published(watermarks) => {
                for (channel, id) in watermarks {
                    trees
                        .published
                        .insert(channel.as_bytes(), &id.to_be_bytes())?;
                }
                Ok(0)
            }
            Change::Ban {
                channel,
                name,
                expires_at,
            } => {
                let key = keys::channel_key(*channel, name);
                let earlier = match expires_at {
                    Some(expires_at) => trees.bans.insert(key, &expires_at.to_be_bytes())?,
                    None => trees.bans.remove(key)?,
                };
                Ok(earlier.map_or(0, |value| decode_u64(&value)))
            }
            Change::Trim { channel, through } => trim(trees, *channel, *through),
            Change::Erase(entries) => erase(trees, entries),
            Change::WebhookCursors {
                hook,
                cursors,
                register,
            } => super::cursors::apply(trees, *hook, cursors, *register).map(|()| 0),
        }
    }

    /// Whether the change must be synced before it is answered: a ban or a
    /// lift is (an admin was told it holds), an erasure too; a watermark or
    /// a webhook cursor lost in a crash only means sending again what
    /// receivers drop by id, and retention's watermark is written before its
    /// deletions.
    pub fn wants_sync(&self) -> bool {
        matches!(self, Change::Ban { .. } | Change::Erase(_))
    }
}

/// Records the trimmed watermark first, so after a crash mid-trim numbering
/// still continues past every id ever given out, then removes up to
/// [`TRIM_BATCH`] of the channel's oldest messages up to `through`; once none
/// are left, the idempotency keys that point at them.
///
/// Every key goes on its own, never in an atomic batch: sled's atomic writes
/// wait for any flush in progress, and this runs on the writer thread, where
/// such a wait holds up every append behind it (see the writer's `apply`).
/// Nothing needs them together: the watermark already says they are gone,
/// and a key a crash leaves behind is removed by the next pass.
fn trim(trees: &Trees, channel: ChannelId, through: u64) -> Result<u64, sled::Error> {
    if through > trees.trimmed_through(channel)? {
        trees
            .trimmed
            .insert(channel.as_bytes(), &through.to_be_bytes())?;
    }
    let range = message_key(channel, 0)..=message_key(channel, through);
    let keys = trees
        .messages
        .range(range)
        .keys()
        .take(TRIM_BATCH)
        .collect::<Result<Vec<_>, _>>()?;
    for key in &keys {
        trees.messages.remove(key)?;
    }
    let removed = keys.len() as u64;
    if removed < TRIM_BATCH as u64 {
        forget_idempotency_keys(trees, channel, |id| id <= through)?;
        forget_revisions(trees, channel, through)?;
    }
    Ok(removed)
}

/// Drops the index entries of edits and deletions of messages up to
/// `through`: their targets are gone.
fn forget_revisions(trees: &Trees, channel: ChannelId, through: u64) -> Result<(), sled::Error> {
    let range = keys::revision_key(channel, 0, 0)..=keys::revision_key(channel, through, u64::MAX);
    for key in trees.revisions.range(range).keys() {
        trees.revisions.remove(key?)?;
    }
    Ok(())
}

/// Drops the channel's idempotency keys that name an id `forget` accepts.
fn forget_idempotency_keys(
    trees: &Trees,
    channel: ChannelId,
    forget: impl Fn(u64) -> bool,
) -> Result<(), sled::Error> {
    for entry in trees.idempotency.scan_prefix(channel.as_bytes()) {
        let (key, id) = entry?;
        if forget(decode_u64(&id)) {
            trees.idempotency.remove(key)?;
        }
    }
    Ok(())
}

/// Stores each erased entry over its original, one key at a time (as trims
/// do), records that a compaction is owed, then drops the idempotency keys
/// that would return an erased entry.
fn erase(trees: &Trees, entries: &[Message]) -> Result<u64, sled::Error> {
    trees.owe_compaction()?;
    let mut erased: HashMap<ChannelId, HashSet<u64>> = HashMap::new();
    for entry in entries {
        let json = serde_json::to_vec(entry).map_err(|e| {
            sled::Error::Io(std::io::Error::other(format!(
                "cannot encode an entry: {e}"
            )))
        })?;
        trees
            .messages
            .insert(message_key(entry.channel, entry.id), json)?;
        erased.entry(entry.channel).or_default().insert(entry.id);
    }
    for (channel, ids) in erased {
        forget_idempotency_keys(trees, channel, |id| ids.contains(&id))?;
    }
    Ok(entries.len() as u64)
}
