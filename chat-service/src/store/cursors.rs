//! The webhooks' cursors: per webhook and channel, the last id the app
//! acknowledged (or that was not for it), in the `webhooks` tree.
//!
//! Keys are `hook (u64 big-endian) ++ channel (16 bytes)` → the id, big-endian;
//! the hook's 8 bytes alone mark a webhook as known, so a webhook seen for the
//! first time starts at the end of every channel instead of its beginning.
//! Written by the writer thread like every change ([`Change::WebhookCursors`]),
//! not synced for: a cursor lost in a crash means delivering again events the
//! app already has, which it drops by their id.

use std::collections::HashMap;

use protocol::ChannelId;

use super::changes::Change;
use super::keys::{CHANNEL_LEN, channel_of_key, decode_u64};
use super::{Store, StoreError, Trees};

const HOOK_LEN: usize = 8;

/// What the store knows of one webhook.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WebhookCursors {
    /// The webhook was seen before (its cursors mean something).
    pub known: bool,
    /// Per channel, the last id delivered.
    pub cursors: HashMap<ChannelId, u64>,
}

fn cursor_key(hook: u64, channel: ChannelId) -> [u8; HOOK_LEN + CHANNEL_LEN] {
    let mut key = [0u8; HOOK_LEN + CHANNEL_LEN];
    key[..HOOK_LEN].copy_from_slice(&hook.to_be_bytes());
    key[HOOK_LEN..].copy_from_slice(channel.as_bytes());
    key
}

/// Writes the cursors (and the mark of a known webhook); the writer's part of
/// [`Change::WebhookCursors`].
pub(super) fn apply(
    trees: &Trees,
    hook: u64,
    cursors: &[(ChannelId, u64)],
    register: bool,
) -> Result<(), sled::Error> {
    if register {
        trees.webhooks.insert(hook.to_be_bytes(), &[1u8][..])?;
    }
    for (channel, id) in cursors {
        trees
            .webhooks
            .insert(cursor_key(hook, *channel), &id.to_be_bytes())?;
    }
    Ok(())
}

impl Store {
    /// Whether the webhook `hook` was seen before, and its cursors.
    pub fn webhook_cursors(&self, hook: u64) -> Result<WebhookCursors, sled::Error> {
        let mut found = WebhookCursors::default();
        for entry in self.inner.trees.webhooks.scan_prefix(hook.to_be_bytes()) {
            let (key, value) = entry?;
            if key.len() == HOOK_LEN {
                found.known = true;
            } else if let Some(channel) = key.get(HOOK_LEN..).and_then(channel_of_key) {
                found.cursors.insert(channel, decode_u64(&value));
            }
        }
        Ok(found)
    }

    /// The last id of `channel` delivered to the webhook `hook` (0: none).
    pub fn webhook_cursor(&self, hook: u64, channel: ChannelId) -> Result<u64, sled::Error> {
        let value = self.inner.trees.webhooks.get(cursor_key(hook, channel))?;
        Ok(value.map_or(0, |value| decode_u64(&value)))
    }

    /// Records how far the webhook `hook` got in each channel, without
    /// waiting and without a sync (see the module's comment). `Busy` when the
    /// writer's queue is full: nothing is recorded.
    pub fn record_webhook_cursors(
        &self,
        hook: u64,
        cursors: Vec<(ChannelId, u64)>,
    ) -> Result<(), StoreError> {
        self.webhook_change(hook, cursors, false)
    }

    /// Marks the webhook `hook` as known, starting at these cursors (the end
    /// of every channel, for a webhook added to a store that has history).
    pub fn register_webhook(
        &self,
        hook: u64,
        cursors: Vec<(ChannelId, u64)>,
    ) -> Result<(), StoreError> {
        self.webhook_change(hook, cursors, true)
    }

    fn webhook_change(
        &self,
        hook: u64,
        cursors: Vec<(ChannelId, u64)>,
        register: bool,
    ) -> Result<(), StoreError> {
        if cursors.is_empty() && !register {
            return Ok(());
        }
        self.change_without_waiting(Change::WebhookCursors {
            hook,
            cursors,
            register,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::open;

    fn channel(n: u8) -> ChannelId {
        ChannelId::from_bytes([n; 16])
    }

    #[tokio::test]
    async fn cursors_are_kept_per_webhook_and_a_registered_webhook_is_known() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _announcements) = open(dir.path());
        assert_eq!(store.webhook_cursors(7).expect("read"), Default::default());
        store
            .register_webhook(7, vec![(channel(1), 4)])
            .expect("queued");
        store
            .record_webhook_cursors(8, vec![(channel(1), 9)])
            .expect("queued");
        store.flush().await.expect("flush");
        let seven = store.webhook_cursors(7).expect("read");
        assert!(seven.known);
        assert_eq!(seven.cursors, HashMap::from([(channel(1), 4)]));
        let eight = store.webhook_cursors(8).expect("read");
        assert!(!eight.known, "recorded cursors alone do not register");
        assert_eq!(store.webhook_cursor(8, channel(1)).expect("read"), 9);
        assert_eq!(store.webhook_cursor(8, channel(2)).expect("read"), 0);
    }
}
