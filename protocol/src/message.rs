//! The message as stored, published and streamed.

use std::borrow::Cow;
use std::io::Write;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::ChannelId;

/// One chat message. The same JSON is the POST answer, the history entry, the MQTT
/// payload and the SSE `data:` line, so every consumer parses one shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "id": 7,
    "channel": "6f9619ff-8b86-d011-b42d-00cf4fc964ff",
    "author": "ann",
    "text": "hello",
    "ts": "2026-11-21T22:40:00.123Z"
}))]
pub struct Message {
    /// Per-channel sequence number: 1, 2, 3 … with no gap and no reuse.
    #[schema(minimum = 1)]
    pub id: u64,
    pub channel: ChannelId,
    pub author: String,
    pub text: String,
    /// RFC 3339 UTC with milliseconds, e.g. `2026-11-21T22:40:00.123Z`.
    #[schema(format = DateTime)]
    pub ts: String,
    /// Public profile of the poster taken from their token, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, required = false)]
    pub user: Option<serde_json::Value>,
}

/// A message's JSON checked for the shape of [`Message`] without copying it:
/// what a subscriber needs to frame the JSON as it came (the one serialisation
/// of a message, made by the store, is the one every socket gets).
#[derive(Debug, Deserialize)]
pub struct MessageCheck<'a> {
    pub id: u64,
    pub channel: ChannelId,
    #[serde(borrow, rename = "author")]
    _author: Cow<'a, str>,
    #[serde(borrow, rename = "text")]
    _text: Cow<'a, str>,
    #[serde(borrow, rename = "ts")]
    _ts: Cow<'a, str>,
    #[serde(default, rename = "user")]
    _user: Option<IgnoredAny>,
}

impl<'a> MessageCheck<'a> {
    /// The message's id and channel, when `json` has the shape of a [`Message`].
    pub fn of(json: &'a [u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(json)
    }
}

impl Message {
    /// The current time in the wire format of [`Message::ts`].
    pub fn now_timestamp() -> String {
        Self::format_timestamp(chrono::Utc::now())
    }

    /// The timestamp `age` ago, in the same fixed-width format as `ts`: timestamps
    /// in this format compare as strings in time order, which is how retention finds
    /// messages older than a cut-off without parsing them.
    pub fn timestamp_before(age: std::time::Duration) -> String {
        let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        let cutoff = chrono::Utc::now()
            .checked_sub_signed(age)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        Self::format_timestamp(cutoff)
    }

    fn format_timestamp(time: chrono::DateTime<chrono::Utc>) -> String {
        time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// The message as one complete SSE event (`id:`, `event: message`, `data:` and the
    /// blank line). Built once per message and shared by every subscriber.
    pub fn sse_frame(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        sse_frame_of(self.id, &json)
    }
}

/// When the message of an SSE frame (as [`sse_frame_of`] makes it) was
/// stored, in milliseconds since the Unix epoch: read from its `"ts"`.
pub fn stored_millis_of_frame(frame: &[u8]) -> Option<i64> {
    const KEY: &[u8] = b"\"ts\":\"";
    let start = frame.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = frame.get(start..)?;
    let end = rest.iter().position(|&byte| byte == b'"')?;
    let ts = std::str::from_utf8(rest.get(..end)?).ok()?;
    let stored = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    Some(stored.timestamp_millis())
}

/// The SSE event of a message already serialized as one line of `json` (what
/// [`Message::sse_frame`] gives for it).
pub fn sse_frame_of(id: u64, json: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(json.len() + 48);
    frame_into(&mut frame, id, json);
    frame
}

/// serde_json escapes every control character, so the JSON is one line and a single
/// `data:` field carries it.
fn frame_into(out: &mut Vec<u8>, id: u64, json: &[u8]) {
    let _ = write!(out, "id: {id}\nevent: message\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_check_accepts_what_a_message_parses_and_refuses_what_it_does_not() {
        let message = sample();
        let json = serde_json::to_vec(&message).expect("json");
        let check = MessageCheck::of(&json).expect("a message");
        assert_eq!((check.id, check.channel), (message.id, message.channel));
        for bad in [
            &br#"{"id":1,"channel":"6f9619ff-8b86-d011-b42d-00cf4fc964ff","author":"a","ts":"t"}"#[..],
            br#"{"id":1,"channel":"nope","author":"a","text":"x","ts":"t"}"#,
            br#"{"id":-1,"channel":"6f9619ff-8b86-d011-b42d-00cf4fc964ff","author":"a","text":"x","ts":"t"}"#,
            br#"{"id":1,"channel":"6f9619ff-8b86-d011-b42d-00cf4fc964ff","author":3,"text":"x","ts":"t"}"#,
        ] {
            assert!(
                MessageCheck::of(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert!(serde_json::from_slice::<Message>(bad).is_err(), "Message agrees");
        }
    }

    #[test]
    fn the_stored_time_is_read_from_a_frame() {
        let json = br#"{"id":3,"channel":"c","author":"a","text":"say \"ts\":\"x","ts":"2026-12-04T16:44:13.761Z"}"#;
        let frame = sse_frame_of(3, json);
        assert_eq!(stored_millis_of_frame(&frame), Some(1_796_402_653_761));
        assert_eq!(stored_millis_of_frame(b"id: 1\n\n"), None);
    }
    use super::*;

    fn sample() -> Message {
        Message {
            id: 7,
            channel: ChannelId::parse("6f9619ff-8b86-d011-b42d-00cf4fc964ff").expect("uuid"),
            author: "ann".into(),
            text: "two\nlines".into(),
            ts: "2026-11-21T22:40:00.123Z".into(),
            user: None,
        }
    }

    #[test]
    fn sse_frame_is_one_event_with_a_single_data_line() {
        let frame = String::from_utf8(sample().sse_frame()).expect("utf-8");
        let lines: Vec<&str> = frame.split('\n').collect();
        assert_eq!(lines[0], "id: 7");
        assert_eq!(lines[1], "event: message");
        assert!(lines[2].starts_with("data: {\"id\":7,"), "{}", lines[2]);
        assert!(lines[2].contains(r#""text":"two\nlines""#));
        assert_eq!(&lines[3..], ["", ""]);
    }

    #[test]
    fn json_omits_absent_user_and_round_trips() {
        let json = serde_json::to_string(&sample()).expect("serialize");
        assert!(!json.contains("user"));
        let back: Message = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, sample());
    }

    #[test]
    fn timestamp_has_milliseconds_and_utc_suffix() {
        let ts = Message::now_timestamp();
        assert_eq!(ts.len(), "2026-11-21T22:40:00.123Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn an_earlier_timestamp_sorts_first_as_a_string() {
        let hour_ago = Message::timestamp_before(std::time::Duration::from_secs(3600));
        let now = Message::now_timestamp();
        assert_eq!(hour_ago.len(), now.len());
        assert!(hour_ago < now, "{hour_ago} < {now}");
    }
}
