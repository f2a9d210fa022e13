//! Key layouts of the sled trees.
//!
//! Messages are keyed `channel (16 bytes) ++ id (u64 big-endian)`, so one channel's
//! history is one ordered range. Per-channel counters (the published and trimmed
//! watermarks) are keyed by the channel's 16 bytes and hold a big-endian u64.

use protocol::ChannelId;

pub const CHANNEL_LEN: usize = 16;
pub const MESSAGE_KEY_LEN: usize = CHANNEL_LEN + 8;

pub fn message_key(channel: ChannelId, id: u64) -> [u8; MESSAGE_KEY_LEN] {
    let mut key = [0u8; MESSAGE_KEY_LEN];
    key[..CHANNEL_LEN].copy_from_slice(channel.as_bytes());
    key[CHANNEL_LEN..].copy_from_slice(&id.to_be_bytes());
    key
}

pub fn id_of_key(key: &[u8]) -> u64 {
    key.get(CHANNEL_LEN..MESSAGE_KEY_LEN)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

pub fn channel_of_key(key: &[u8]) -> Option<ChannelId> {
    let bytes: [u8; CHANNEL_LEN] = key.get(..CHANNEL_LEN)?.try_into().ok()?;
    Some(ChannelId::from_bytes(bytes))
}

/// `channel ++ target ++ revision` (ids big-endian): an edit or deletion
/// `revision` of message `target`. One channel's revisions sort by target,
/// then in log order, so those of a page of messages are one range.
pub const REVISION_KEY_LEN: usize = MESSAGE_KEY_LEN + 8;

pub fn revision_key(channel: ChannelId, target: u64, revision: u64) -> [u8; REVISION_KEY_LEN] {
    let mut key = [0u8; REVISION_KEY_LEN];
    key[..MESSAGE_KEY_LEN].copy_from_slice(&message_key(channel, target));
    key[MESSAGE_KEY_LEN..].copy_from_slice(&revision.to_be_bytes());
    key
}

/// The target and revision ids of a [`revision_key`].
pub fn ids_of_revision_key(key: &[u8]) -> (u64, u64) {
    let revision = key
        .get(MESSAGE_KEY_LEN..REVISION_KEY_LEN)
        .and_then(|bytes| bytes.try_into().ok())
        .map_or(0, u64::from_be_bytes);
    (id_of_key(key), revision)
}

/// The smallest key of the channel after `channel`, or `None` after the last one:
/// how the store steps from one channel's range to the next.
pub fn next_channel_start(channel: ChannelId) -> Option<[u8; CHANNEL_LEN]> {
    let value = u128::from_be_bytes(*channel.as_bytes());
    value.checked_add(1).map(u128::to_be_bytes)
}

/// `channel ++ key`: an idempotency key, or a banned name, of the channel.
pub fn channel_key(channel: ChannelId, key: &str) -> Vec<u8> {
    let mut tree_key = channel.as_bytes().to_vec();
    tree_key.extend_from_slice(key.as_bytes());
    tree_key
}

/// The channel and the text of a [`channel_key`].
pub fn split_channel_key(key: &[u8]) -> Option<(ChannelId, String)> {
    let channel = channel_of_key(key)?;
    let text = String::from_utf8(key.get(CHANNEL_LEN..)?.to_vec()).ok()?;
    Some((channel, text))
}

pub fn decode_u64(value: &[u8]) -> u64 {
    value.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_keys_sort_by_channel_then_id() {
        let a = ChannelId::from_bytes([1; 16]);
        let b = ChannelId::from_bytes([2; 16]);
        assert!(message_key(a, 2) < message_key(a, 256));
        assert!(message_key(a, u64::MAX) < message_key(b, 0));
        assert_eq!(id_of_key(&message_key(a, 42)), 42);
        assert_eq!(channel_of_key(&message_key(b, 7)), Some(b));
    }

    #[test]
    fn revision_keys_sort_by_target_then_revision_within_the_channel() {
        let a = ChannelId::from_bytes([1; 16]);
        assert!(revision_key(a, 7, 9) < revision_key(a, 7, 12));
        assert!(revision_key(a, 7, u64::MAX) < revision_key(a, 8, 9));
        assert!(
            revision_key(a, u64::MAX, u64::MAX).as_slice()
                < message_key(ChannelId::from_bytes([2; 16]), 0).as_slice()
        );
        assert_eq!(ids_of_revision_key(&revision_key(a, 7, 9)), (7, 9));
    }

    #[test]
    fn next_channel_start_steps_past_every_key_of_the_channel() {
        let a = ChannelId::from_bytes([1; 16]);
        let next = next_channel_start(a).expect("not the last channel");
        assert!(message_key(a, u64::MAX).as_slice() < next.as_slice());
        assert_eq!(next_channel_start(ChannelId::from_bytes([0xff; 16])), None);
    }
}
