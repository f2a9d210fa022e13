//! Erasure (`POST /erase`): an author's texts removed from the store itself.
//!
//! What is erased: every synced entry the author wrote in the channel (or in
//! every channel) and time range asked, messages and edits alike, and every
//! edit of those messages by someone else. Each keeps its id, author and time,
//! and loses its text and token profile; a message is marked `deleted`, so
//! history shows it deleted. The idempotency keys that would return one are
//! dropped. The rewrite goes through the writer like every change, in
//! batches; a crash part way leaves some erased and some not, and asking
//! again finishes the job (nothing erased is found twice).
//!
//! sled keeps old versions of rewritten values in its files until it
//! reclaims their space, so the store records that a compaction is owed and
//! rewrites itself into fresh files on its next start ([`super::compaction`]).

use std::collections::HashSet;

use protocol::{ChannelId, Message};

use super::reads::SyncedHistory;

/// Entries rewritten per change, so one change never holds up appends for long.
pub const ERASE_BATCH: usize = 1000;

/// What to erase: `author`'s entries, in one channel or all, written at or
/// after `since` and at or before `until` (timestamps in the wire format).
#[derive(Debug, Clone)]
pub struct Erasure {
    pub author: String,
    pub channel: Option<ChannelId>,
    pub since: Option<String>,
    pub until: Option<String>,
}

impl Erasure {
    /// Whether `entry` is the author's, in the range, and still has a text.
    fn covers(&self, entry: &Message) -> bool {
        entry.author == self.author
            && self.since.as_ref().is_none_or(|since| entry.ts >= *since)
            && self.until.as_ref().is_none_or(|until| entry.ts <= *until)
            && !is_erased(entry)
    }
}

/// Nothing of it is left to erase: no text, no profile.
fn is_erased(entry: &Message) -> bool {
    entry.text.is_empty() && entry.user.is_none()
}

/// The entries `erasure` covers, and the edits of its messages by others,
/// each as it will be stored: without its text and profile.
pub(super) fn erased_entries(
    history: &SyncedHistory,
    erasure: &Erasure,
) -> Result<Vec<Message>, sled::Error> {
    let mut found = history.matching(erasure.channel, |entry| erasure.covers(entry))?;
    let mut seen: HashSet<(ChannelId, u64)> = found.iter().map(|e| (e.channel, e.id)).collect();
    let targets: Vec<(ChannelId, u64)> = found
        .iter()
        .filter(|entry| entry.kind.is_message())
        .map(|entry| (entry.channel, entry.id))
        .collect();
    for (channel, target) in targets {
        for edit in history.revisions_of(channel, target)? {
            if !is_erased(&edit) && seen.insert((channel, edit.id)) {
                found.push(edit);
            }
        }
    }
    Ok(found.into_iter().map(blanked).collect())
}

/// `entry` with its text and profile gone; a message is marked deleted.
fn blanked(mut entry: Message) -> Message {
    entry.text.clear();
    entry.user = None;
    if entry.kind.is_message() {
        entry.deleted = true;
        entry.edited_at = None;
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_erasure_covers_the_authors_entries_in_its_range_that_still_have_text() {
        let channel = ChannelId::from_bytes([1; 16]);
        let entry = |author: &str, text: &str, ts: &str| Message::new(1, channel, author, text, ts);
        let erasure = Erasure {
            author: "ann".into(),
            channel: None,
            since: Some("2026-01-02T00:00:00.000Z".into()),
            until: Some("2026-01-03T00:00:00.000Z".into()),
        };
        assert!(erasure.covers(&entry("ann", "hi", "2026-01-02T00:00:00.000Z")));
        assert!(erasure.covers(&entry("ann", "hi", "2026-01-03T00:00:00.000Z")));
        assert!(!erasure.covers(&entry("ann", "hi", "2026-01-01T23:59:59.999Z")));
        assert!(!erasure.covers(&entry("ann", "hi", "2026-01-03T00:00:00.001Z")));
        assert!(!erasure.covers(&entry("bob", "hi", "2026-01-02T10:00:00.000Z")));
        let erased = blanked(entry("ann", "hi", "2026-01-02T10:00:00.000Z"));
        assert!(erased.deleted && !erasure.covers(&erased), "erased once");
    }
}
