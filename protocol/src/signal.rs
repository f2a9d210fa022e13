//! Signals: typing and read markers a channel's clients send each other. They
//! travel like messages (chat-service → broker → broadcast-sse → streams) but
//! are never stored, never numbered and never replayed: a signal missed is
//! simply missed, and the next one says the same again.

use serde::{Deserialize, Serialize};

use crate::ChannelId;

/// Longest author a received signal may name, in characters: generous, as
/// the chat-service checks its own (smaller, configurable) limit before it
/// publishes; this bound only keeps what a device puts on the topic sane.
pub const MAX_AUTHOR_CHARS: usize = 256;

/// What a signal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignalType {
    /// The author is typing a message right now.
    Typing,
    /// The author has read the channel up to message `id`.
    Read,
}

/// One signal. The same JSON is the POST answer, the MQTT payload on
/// `{prefix}/channels/{channel}/signals` and the `data:` of an SSE
/// `event: signal` (which has no `id:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "read",
    "channel": "6f9619ff-8b86-d011-b42d-00cf4fc964ff",
    "author": "ann",
    "id": 7,
    "ts": "2026-11-21T22:40:00.123Z"
}))]
pub struct Signal {
    #[serde(rename = "type")]
    pub kind: SignalType,
    pub channel: ChannelId,
    pub author: String,
    /// For `read`: the id of the newest message the author has read (≥ 1).
    /// Absent for `typing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, required = false)]
    pub id: Option<u64>,
    /// When the chat-service accepted it: RFC 3339 UTC with milliseconds.
    #[schema(format = DateTime)]
    pub ts: String,
    /// Public profile of the sender taken from their token, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, required = false)]
    pub user: Option<serde_json::Value>,
}

/// Why some JSON is not a signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSignal(pub String);

impl Signal {
    /// A signal of `kind` from `author`, stamped now. `id` is the read
    /// marker's message id (`None` for typing).
    pub fn new(
        kind: SignalType,
        channel: ChannelId,
        author: String,
        id: Option<u64>,
        user: Option<serde_json::Value>,
    ) -> Self {
        Signal {
            kind,
            channel,
            author,
            id,
            ts: crate::Message::now_timestamp(),
            user,
        }
    }

    /// A signal from JSON as it came off the broker: the shape of [`Signal`]
    /// and the rules of [`Signal::check`].
    pub fn parse(json: &[u8]) -> Result<Self, InvalidSignal> {
        let signal: Signal =
            serde_json::from_slice(json).map_err(|e| InvalidSignal(e.to_string()))?;
        signal.check()?;
        Ok(signal)
    }

    /// The rules serde does not hold: a read marker names a message id of at
    /// least 1 and a typing signal none; the author is a name (not blank, no
    /// control characters, at most [`MAX_AUTHOR_CHARS`]); `ts` is a time.
    pub fn check(&self) -> Result<(), InvalidSignal> {
        check_id(self.kind, self.id)?;
        let author = self.author.trim();
        if author.is_empty()
            || author.chars().count() > MAX_AUTHOR_CHARS
            || author.chars().any(char::is_control)
        {
            return Err(InvalidSignal(format!(
                "author must be 1 to {MAX_AUTHOR_CHARS} characters without control characters"
            )));
        }
        if chrono::DateTime::parse_from_rfc3339(&self.ts).is_err() {
            return Err(InvalidSignal("ts must be an RFC 3339 time".into()));
        }
        Ok(())
    }

    /// The signal as one complete SSE event: `event: signal` and one `data:`
    /// line, with no `id:` (a signal is never resumed from).
    pub fn sse_frame(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut frame = Vec::with_capacity(json.len() + 24);
        frame.extend_from_slice(b"event: signal\ndata: ");
        frame.extend_from_slice(&json);
        frame.extend_from_slice(b"\n\n");
        frame
    }
}

/// A read marker needs a message id of at least 1; a typing signal has none.
pub fn check_id(kind: SignalType, id: Option<u64>) -> Result<(), InvalidSignal> {
    match (kind, id) {
        (SignalType::Read, Some(id)) if id >= 1 => Ok(()),
        (SignalType::Read, _) => Err(InvalidSignal(
            "a read marker needs the id (at least 1) of the newest message read".into(),
        )),
        (SignalType::Typing, None) => Ok(()),
        (SignalType::Typing, Some(_)) => Err(InvalidSignal("a typing signal has no id".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANNEL: &str = "6f9619ff-8b86-d011-b42d-00cf4fc964ff";

    fn channel() -> ChannelId {
        ChannelId::parse(CHANNEL).expect("uuid")
    }

    #[test]
    fn a_typing_signal_has_no_id_on_the_wire_and_round_trips() {
        let typing = Signal::new(SignalType::Typing, channel(), "ann".into(), None, None);
        let json = serde_json::to_string(&typing).expect("json");
        assert!(
            json.starts_with(r#"{"type":"typing","channel":""#),
            "{json}"
        );
        assert!(!json.contains("\"id\"") && !json.contains("user"), "{json}");
        assert_eq!(Signal::parse(json.as_bytes()), Ok(typing));
    }

    #[test]
    fn a_read_marker_carries_its_id() {
        let read = Signal::new(SignalType::Read, channel(), "bob".into(), Some(7), None);
        let json = serde_json::to_string(&read).expect("json");
        assert!(json.contains(r#""author":"bob","id":7,"ts":""#), "{json}");
        assert_eq!(Signal::parse(json.as_bytes()), Ok(read));
    }

    #[test]
    fn what_is_not_a_valid_signal_is_refused() {
        let ts = "2026-11-21T22:40:00.123Z";
        let cases = [
            (
                format!(r#"{{"type":"wave","channel":"{CHANNEL}","author":"a","ts":"{ts}"}}"#),
                "unknown type",
            ),
            (
                format!(r#"{{"type":"read","channel":"{CHANNEL}","author":"a","ts":"{ts}"}}"#),
                "read without id",
            ),
            (
                format!(
                    r#"{{"type":"read","channel":"{CHANNEL}","author":"a","id":0,"ts":"{ts}"}}"#
                ),
                "read of id 0",
            ),
            (
                format!(
                    r#"{{"type":"typing","channel":"{CHANNEL}","author":"a","id":3,"ts":"{ts}"}}"#
                ),
                "typing with id",
            ),
            (
                format!(r#"{{"type":"typing","channel":"nope","author":"a","ts":"{ts}"}}"#),
                "bad channel",
            ),
            (
                format!(r#"{{"type":"typing","channel":"{CHANNEL}","author":" ","ts":"{ts}"}}"#),
                "blank author",
            ),
            (
                format!(
                    r#"{{"type":"typing","channel":"{CHANNEL}","author":"a\u0007","ts":"{ts}"}}"#
                ),
                "control character",
            ),
            (
                format!(r#"{{"type":"typing","channel":"{CHANNEL}","author":"a","ts":"soon"}}"#),
                "bad time",
            ),
            (
                format!(r#"{{"type":"typing","channel":"{CHANNEL}","ts":"{ts}"}}"#),
                "no author",
            ),
            ("[1,2]".to_string(), "not an object"),
        ];
        for (json, why) in cases {
            assert!(Signal::parse(json.as_bytes()).is_err(), "{why}: {json}");
        }
    }

    #[test]
    fn the_sse_frame_is_a_signal_event_without_an_id() {
        let typing = Signal::new(SignalType::Typing, channel(), "ann".into(), None, None);
        let frame = String::from_utf8(typing.sse_frame()).expect("utf-8");
        let lines: Vec<&str> = frame.split('\n').collect();
        assert_eq!(lines[0], "event: signal");
        assert!(
            lines[1].starts_with("data: {\"type\":\"typing\""),
            "{}",
            lines[1]
        );
        assert_eq!(&lines[2..], ["", ""]);
        assert!(!frame.contains("id: "));
    }
}
