//! The `id:` of a stream of several channels: the last id of each, compact
//! enough for a browser to send back as its `Last-Event-ID`.
//!
//! A cursor is a comma-separated list of `{key}:{id}`, where the key is the
//! first 8 hexadecimal digits of the channel's UUID and `id` the last id of
//! that channel the client has: `0f8fad5b:12,1a2b3c4d:7`. The order does not
//! matter, and a client may leave a channel out (it then starts with what is
//! posted from now on), so a client that changes the channels it follows can
//! write the cursor of the new set itself. An entry for a channel the stream
//! does not follow is refused: the cursor belongs to another stream.

use protocol::ChannelId;

/// Hexadecimal digits of a channel's UUID that name it in a cursor.
const KEY_LEN: usize = 8;
/// Longest cursor read: 32 channels' keys and 20-digit ids, with room to spare.
const MAX_CURSOR_LEN: usize = 4096;

/// A channel's name in a cursor.
pub fn key(channel: ChannelId) -> String {
    let mut text = String::with_capacity(KEY_LEN);
    push_key(&mut text, channel);
    text
}

/// Writes a channel's key: the first `KEY_LEN` hex digits of its UUID are its
/// first `KEY_LEN / 2` bytes. Written in place, since a cursor is rendered for
/// every event of a stream.
fn push_key(text: &mut String, channel: ChannelId) {
    use std::fmt::Write;
    for byte in &channel.as_bytes()[..KEY_LEN / 2] {
        let _ = write!(text, "{byte:02x}");
    }
}

/// Two channels of one stream whose keys are the same cannot share a cursor.
pub fn first_shared_key(channels: &[ChannelId]) -> Option<String> {
    let mut keys: Vec<String> = channels.iter().map(|channel| key(*channel)).collect();
    keys.sort_unstable();
    keys.windows(2)
        .find(|pair| pair[0] == pair[1])
        .map(|pair| pair[0].clone())
}

/// The cursor of `(channel, last id)` pairs.
pub fn render(positions: impl Iterator<Item = (ChannelId, u64)>) -> String {
    use std::fmt::Write;
    let mut cursor = String::with_capacity(64);
    for (index, (channel, id)) in positions.enumerate() {
        if index > 0 {
            cursor.push(',');
        }
        push_key(&mut cursor, channel);
        let _ = write!(cursor, ":{id}");
    }
    cursor
}

/// Reads `raw` for `channels`: the last id of each, or `None` where the cursor
/// has no entry. The error says what is wrong, for the client.
pub fn parse(raw: &str, channels: &[ChannelId]) -> Result<Vec<Option<u64>>, String> {
    let mut positions = vec![None; channels.len()];
    if raw.len() > MAX_CURSOR_LEN {
        return Err(format!("a cursor is at most {MAX_CURSOR_LEN} bytes"));
    }
    let keys: Vec<String> = channels.iter().map(|channel| key(*channel)).collect();
    for entry in raw.split(',').filter(|entry| !entry.is_empty()) {
        let (entry_key, id) = entry
            .split_once(':')
            .ok_or_else(|| format!("{entry:?} is not key:id"))?;
        let id = id
            .parse::<u64>()
            .map_err(|_| format!("{entry:?} has no valid id"))?;
        let index = keys
            .iter()
            .position(|key| key.eq_ignore_ascii_case(entry_key))
            .ok_or_else(|| format!("{entry_key:?} is not a channel of this stream"))?;
        if positions[index].replace(id).is_some() {
            return Err(format!("{entry_key:?} appears twice"));
        }
    }
    Ok(positions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(text: &str) -> ChannelId {
        ChannelId::parse(text).expect("a channel id")
    }

    fn two() -> [ChannelId; 2] {
        [
            channel("0f8fad5b-d9cb-469f-a165-70867728950e"),
            channel("1a2b3c4d-0000-4000-8000-000000000001"),
        ]
    }

    #[test]
    fn a_key_is_the_start_of_the_channel_uuid() {
        for channel in two() {
            assert_eq!(key(channel), channel.to_string()[..KEY_LEN]);
        }
    }

    #[test]
    fn a_rendered_cursor_reads_back() {
        let channels = two();
        let cursor = render(channels.iter().copied().zip([12, 7]));
        assert_eq!(cursor, "0f8fad5b:12,1a2b3c4d:7");
        assert_eq!(parse(&cursor, &channels), Ok(vec![Some(12), Some(7)]));
    }

    #[test]
    fn entries_may_come_in_any_order_or_be_left_out() {
        let channels = two();
        assert_eq!(parse("1a2b3c4d:3", &channels), Ok(vec![None, Some(3)]));
        assert_eq!(
            parse("1A2B3C4D:3,0f8fad5b:9", &channels),
            Ok(vec![Some(9), Some(3)])
        );
        assert_eq!(parse("", &channels), Ok(vec![None, None]));
    }

    #[test]
    fn a_malformed_or_foreign_cursor_is_refused() {
        let channels = two();
        for bad in [
            "12",
            "0f8fad5b:x",
            "0f8fad5b:-1",
            "0f8fad5b:1,0f8fad5b:2",
            "deadbeef:1",
            "0f8fad5b:1;1a2b3c4d:2",
        ] {
            assert!(parse(bad, &channels).is_err(), "{bad:?}");
        }
        assert!(parse(&"0".repeat(MAX_CURSOR_LEN + 1), &channels).is_err());
    }

    #[test]
    fn channels_that_share_a_key_are_found() {
        let mut channels = two().to_vec();
        assert_eq!(first_shared_key(&channels), None);
        channels.push(channel("0f8fad5b-1111-4111-8111-111111111111"));
        assert_eq!(first_shared_key(&channels).as_deref(), Some("0f8fad5b"));
    }
}
