//! The control events a stream writes besides messages, and the splice of a
//! message frame under a cursor.

use bytes::Bytes;
use protocol::ChannelId;

/// Where a message frame's fields after its `id:` line start: a stream of
/// several channels writes its cursor in place of that line and shares the rest.
pub(super) fn frame_fields_after_id(frame: &[u8]) -> usize {
    if !frame.starts_with(b"id: ") {
        return 0;
    }
    frame
        .iter()
        .position(|byte| *byte == b'\n')
        .map_or(0, |newline| newline + 1)
}

/// Tells the client that ids `from..=to` of `channel` no longer exist. The
/// `id:` (`to`, or the cursor with `to`) moves the browser's `Last-Event-ID`
/// past them, so a reconnect does not report them again.
pub(super) fn gap_event(channel: ChannelId, from: u64, to: u64, id: &str) -> Bytes {
    Bytes::from(format!(
        "event: gap\nid: {id}\ndata: {{\"channel\":\"{channel}\",\"from\":{from},\"to\":{to}}}\n\n"
    ))
}

/// Tells the client that its cursor of `channel` is past the newest stored id
/// (`last_id`) and that the channel follows from its start. The `id:` (`0`, or
/// the cursor with `0`) moves the browser's `Last-Event-ID` back, so a reconnect
/// does not report the stale cursor again.
pub(super) fn reset_event(channel: ChannelId, last_id: u64, id: &str) -> Bytes {
    Bytes::from(format!(
        "event: reset\nid: {id}\ndata: {{\"channel\":\"{channel}\",\"last_id\":{last_id}}}\n\n"
    ))
}

/// Tells the client to reconnect (its `Last-Event-ID` makes that lossless) when the
/// stream cannot be kept complete right now.
pub(super) fn reconnect_event(reason: &str) -> Bytes {
    let data = serde_json::json!({ "reason": reason });
    Bytes::from(format!("event: reconnect\ndata: {data}\n\n"))
}
