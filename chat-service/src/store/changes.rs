//! Writes to the store besides appends: bans, retention and the publisher's
//! watermarks. Each is a request to the writer thread like an append, so the
//! writer is the one thread that changes sled, and no sled write runs on a
//! runtime thread that carries connections.

use protocol::ChannelId;

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
}

impl Change {
    /// Makes the change. Answers, by change: `Published` 0; `Ban` the expiry
    /// of the ban it replaced or lifted (0: none); `Trim` the messages removed
    /// (at most [`TRIM_BATCH`]).
    pub fn apply(&self, trees: &Trees) -> Result<u64, sled::Error> {
        match self {
            Change::Published(watermarks) => {
                let mut batch = sled::Batch::default();
                for (channel, id) in watermarks {
                    batch.insert(&channel.as_bytes()[..], &id.to_be_bytes()[..]);
                }
                trees.published.apply_batch(batch)?;
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
        }
    }

    /// Whether the change must be synced before it is answered: a ban or a
    /// lift is (an admin was told it holds); a watermark lost in a crash only
    /// means re-publishing what subscribers drop by id, and retention's
    /// watermark is written before its deletions.
    pub fn wants_sync(&self) -> bool {
        matches!(self, Change::Ban { .. })
    }
}

/// Records the trimmed watermark first, so after a crash mid-trim numbering
/// still continues past every id ever given out, then removes up to
/// [`TRIM_BATCH`] of the channel's oldest messages up to `through`; once none
/// are left, the idempotency keys that point at them.
fn trim(trees: &Trees, channel: ChannelId, through: u64) -> Result<u64, sled::Error> {
    if through > trees.trimmed_through(channel)? {
        trees
            .trimmed
            .insert(channel.as_bytes(), &through.to_be_bytes())?;
    }
    let range = message_key(channel, 0)..=message_key(channel, through);
    let mut batch = sled::Batch::default();
    let mut removed = 0;
    for key in trees.messages.range(range).keys().take(TRIM_BATCH) {
        batch.remove(key?);
        removed += 1;
    }
    trees.messages.apply_batch(batch)?;
    if removed < TRIM_BATCH as u64 {
        forget_idempotency_keys(trees, channel, through)?;
    }
    Ok(removed)
}

fn forget_idempotency_keys(
    trees: &Trees,
    channel: ChannelId,
    through: u64,
) -> Result<(), sled::Error> {
    let mut batch = sled::Batch::default();
    for entry in trees.idempotency.scan_prefix(channel.as_bytes()) {
        let (key, id) = entry?;
        if decode_u64(&id) <= through {
            batch.remove(key);
        }
    }
    trees.idempotency.apply_batch(batch)
}
