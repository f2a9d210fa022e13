//! The event an app receives for one entry of a channel's log:
//! `{"id":"<channel>:<log id>","type":"message.created","channel":"<uuid>",
//! "ts":"…","data":<the entry's JSON as stored>}`.
//!
//! Everything in it comes from the stored entry, so a retry, or a delivery
//! after a restart, sends the same body: the receiver deduplicates by `id`.

use protocol::{ChannelId, Kind};
use serde::{Deserialize, Serialize};

/// What happened, by the entry's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    MessageCreated,
    MessageUpdated,
    MessageDeleted,
}

impl EventType {
    /// Every event a webhook can ask for.
    pub const ALL: [EventType; 3] = [
        EventType::MessageCreated,
        EventType::MessageUpdated,
        EventType::MessageDeleted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventType::MessageCreated => "message.created",
            EventType::MessageUpdated => "message.updated",
            EventType::MessageDeleted => "message.deleted",
        }
    }

    fn of(kind: Kind) -> Self {
        match kind {
            Kind::Message => EventType::MessageCreated,
            Kind::Update => EventType::MessageUpdated,
            Kind::Delete => EventType::MessageDeleted,
        }
    }
}

/// One event, ready to sign and send.
#[derive(Debug, Clone)]
pub struct Event {
    pub event_type: EventType,
    pub body: Vec<u8>,
}

/// The fields of a stored entry the event needs.
#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    kind: Kind,
    #[serde(default)]
    ts: String,
}

/// The envelope without its `data`, which follows as the stored bytes.
#[derive(Serialize)]
struct Envelope<'a> {
    id: String,
    #[serde(rename = "type")]
    event_type: &'static str,
    channel: ChannelId,
    ts: &'a str,
}

/// The event for the entry `id` of `channel` stored as `json`; an error when
/// the stored JSON cannot be read.
pub fn of_entry(channel: ChannelId, id: u64, json: &[u8]) -> Result<Event, serde_json::Error> {
    // Parsing the whole entry checks that it is one JSON value, so the bytes
    // can be copied into the envelope as they are.
    let entry: Entry = serde_json::from_slice(json)?;
    let event_type = EventType::of(entry.kind);
    let envelope = Envelope {
        id: event_id(channel, id),
        event_type: event_type.name(),
        channel,
        ts: &entry.ts,
    };
    let mut body = serde_json::to_vec(&envelope)?;
    body.pop(); // the closing brace
    body.extend_from_slice(b",\"data\":");
    body.extend_from_slice(json);
    body.push(b'}');
    Ok(Event { event_type, body })
}

/// `<channel>:<log id>`: unique, and the same at every delivery of the entry.
pub fn event_id(channel: ChannelId, id: u64) -> String {
    format!("{channel}:{id}")
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn channel() -> ChannelId {
        ChannelId::from_bytes([7; 16])
    }

    #[test]
    fn a_message_is_created_and_its_stored_json_is_the_data() {
        let stored = br#"{"id":3,"channel":"07070707-0707-0707-0707-070707070707","author":"ann","text":"hi","ts":"2026-11-21T22:40:00.123Z"}"#;
        let event = of_entry(channel(), 3, stored).expect("readable");
        assert_eq!(event.event_type, EventType::MessageCreated);
        let body: Value = serde_json::from_slice(&event.body).expect("JSON");
        assert_eq!(
            body,
            json!({
                "id": "07070707-0707-0707-0707-070707070707:3",
                "type": "message.created",
                "channel": "07070707-0707-0707-0707-070707070707",
                "ts": "2026-11-21T22:40:00.123Z",
                "data": serde_json::from_slice::<Value>(stored).expect("JSON"),
            })
        );
    }

    #[test]
    fn edits_and_deletions_are_their_own_events() {
        let update = br#"{"id":4,"kind":"update","target":3,"text":"hey","ts":"t"}"#;
        let delete = br#"{"id":5,"kind":"delete","target":3,"text":"","ts":"t"}"#;
        let of = |json: &[u8]| of_entry(channel(), 1, json).expect("readable").event_type;
        assert_eq!(of(update), EventType::MessageUpdated);
        assert_eq!(of(delete), EventType::MessageDeleted);
    }

    #[test]
    fn an_unreadable_entry_is_an_error() {
        assert!(of_entry(channel(), 1, b"not json").is_err());
        assert!(of_entry(channel(), 1, br#"{"kind":"shout"}"#).is_err());
    }
}
