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
    /// What this entry of the log is: a message (the default, not written), or
    /// an edit or deletion of the message [`Message::target`] names.
    #[serde(default, skip_serializing_if = "Kind::is_message")]
    #[schema(required = false)]
    pub kind: Kind,
    /// The id of the message an `update` or `delete` entry changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, required = false)]
    pub target: Option<u64>,
    /// In history as messages now are: when the text was last edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, required = false)]
    pub edited_at: Option<String>,
    /// In history as messages now are: the message was deleted (its text is
    /// empty).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub deleted: bool,
}

/// What an entry of a channel's log does. Every entry has the channel's next
/// id, so an edit or a deletion reaches streams, resumes and MQTT like a
/// message does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A new message.
    #[default]
    Message,
    /// A new text for the message `target` names (the entry's `text`).
    Update,
    /// The message `target` names is deleted (the entry's `text` is empty).
    Delete,
}

impl Kind {
    pub fn is_message(&self) -> bool {
        *self == Kind::Message
    }

    /// The SSE event an entry of this kind is sent as.
    pub fn event(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Update => "update",
            Kind::Delete => "delete",
        }
    }
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
    #[serde(default)]
    pub kind: Kind,
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

    /// An RFC 3339 time in the wire format of [`Message::ts`] (UTC,
    /// milliseconds), so it compares as a string with stored timestamps.
    pub fn parse_timestamp(raw: &str) -> Option<String> {
        let time = chrono::DateTime::parse_from_rfc3339(raw).ok()?;
        Some(Self::format_timestamp(time.with_timezone(&chrono::Utc)))
    }

    fn format_timestamp(time: chrono::DateTime<chrono::Utc>) -> String {
        time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// The message as one complete SSE event (`id:`, `event:` of its kind,
    /// `data:` and the blank line). Built once per message and shared by every
    /// subscriber.
    pub fn sse_frame(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        sse_frame_of(self.id, self.kind, &json)
    }

    /// A new message (not an edit or a deletion) with no token profile.
    pub fn new(id: u64, channel: ChannelId, author: &str, text: &str, ts: &str) -> Self {
        Message {
            id,
            channel,
            author: author.to_string(),
            text: text.to_string(),
            ts: ts.to_string(),
            user: None,
            kind: Kind::Message,
            target: None,
            edited_at: None,
            deleted: false,
        }
    }

    /// Applies `change` (an `update` or `delete` entry that targets this
    /// message); any other entry leaves it as it is. A deletion
    /// is final: an edit that raced it changes nothing.
    pub fn revise(&mut self, change: &Message) {
        if change.target != Some(self.id) || self.deleted {
            return;
        }
        match change.kind {
            Kind::Message => {}
            Kind::Update => {
                self.text.clone_from(&change.text);
                self.edited_at = Some(change.ts.clone());
            }
            Kind::Delete => {
                self.text.clear();
                self.deleted = true;
            }
        }
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

/// The SSE event of a log entry of `kind` already serialized as one line of
/// `json` (what [`Message::sse_frame`] gives for it).
pub fn sse_frame_of(id: u64, kind: Kind, json: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(json.len() + 48);
    frame_into(&mut frame, id, kind, json);
    frame
}

/// serde_json escapes every control character, so the JSON is one line and a single
/// `data:` field carries it.
fn frame_into(out: &mut Vec<u8>, id: u64, kind: Kind, json: &[u8]) {
    let _ = write!(out, "id: {id}\nevent: {}\ndata: ", kind.event());
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
        let frame = sse_frame_of(3, Kind::Message, json);
        assert_eq!(stored_millis_of_frame(&frame), Some(1_796_402_653_761));
        assert_eq!(stored_millis_of_frame(b"id: 1\n\n"), None);
    }
    use super::*;

    fn sample() -> Message {
        let channel = ChannelId::parse("6f9619ff-8b86-d011-b42d-00cf4fc964ff").expect("uuid");
        Message::new(7, channel, "ann", "two\nlines", "2026-11-21T22:40:00.123Z")
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

    fn change(id: u64, kind: Kind, target: u64, text: &str) -> Message {
        Message {
            kind,
            target: Some(target),
            ..Message::new(
                id,
                sample().channel,
                "bob",
                text,
                "2026-11-21T22:41:00.000Z",
            )
        }
    }

    #[test]
    fn an_edit_or_deletion_is_framed_as_its_own_event_and_keeps_its_kind_on_the_wire() {
        let edit = change(8, Kind::Update, 7, "fixed");
        let json = serde_json::to_string(&edit).expect("json");
        assert!(json.contains(r#""kind":"update","target":7"#), "{json}");
        assert_eq!(serde_json::from_str::<Message>(&json).expect("parse"), edit);
        let frame = String::from_utf8(edit.sse_frame()).expect("utf-8");
        assert!(frame.starts_with("id: 8\nevent: update\ndata: "), "{frame}");
        let check = MessageCheck::of(json.as_bytes()).expect("a log entry");
        assert_eq!(check.kind, Kind::Update);
        let plain = serde_json::to_string(&sample()).expect("json");
        assert!(
            !plain.contains("kind") && !plain.contains("target"),
            "{plain}"
        );
        assert!(!plain.contains("edited_at") && !plain.contains("deleted"));
    }

    #[test]
    fn a_message_revised_by_its_edit_and_deletion_shows_them_and_ignores_others() {
        let mut message = sample();
        message.revise(&change(8, Kind::Update, 7, "fixed"));
        assert_eq!(message.text, "fixed");
        let edited_at = message.edited_at.as_deref();
        assert_eq!(edited_at, Some("2026-11-21T22:41:00.000Z"));
        assert_eq!(
            (message.id, message.author.as_str()),
            (7, "ann"),
            "id and author stay"
        );
        message.revise(&change(9, Kind::Delete, 7, ""));
        assert!(message.deleted && message.text.is_empty());
        let deleted = message.clone();
        message.revise(&change(10, Kind::Update, 7, "again"));
        assert_eq!(message, deleted, "a deletion is final");
        let mut untouched = sample();
        untouched.revise(&change(9, Kind::Delete, 6, ""));
        assert_eq!(untouched, sample());
    }

    #[test]
    fn timestamp_has_milliseconds_and_utc_suffix() {
        let ts = Message::now_timestamp();
        assert_eq!(ts.len(), "2026-11-21T22:40:00.123Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn a_parsed_timestamp_is_in_the_wire_format() {
        let parsed = Message::parse_timestamp("2026-11-21T23:40:00+01:00");
        assert_eq!(parsed.as_deref(), Some("2026-11-21T22:40:00.000Z"));
        assert_eq!(Message::parse_timestamp("yesterday"), None);
    }

    #[test]
    fn an_earlier_timestamp_sorts_first_as_a_string() {
        let hour_ago = Message::timestamp_before(std::time::Duration::from_secs(3600));
        let now = Message::now_timestamp();
        assert_eq!(hour_ago.len(), now.len());
        assert!(hour_ago < now, "{hour_ago} < {now}");
    }
}
