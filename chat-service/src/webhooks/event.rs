//! The event an app receives for one entry of a channel's log:
//! `{"id":"<channel>:<log id>","type":"message.created","channel":"<uuid>",
//! "ts":"…","data":<the entry's JSON as stored>}`.
//!
//! Everything in it comes from the stored entry, so a retry, or a delivery
//! after a restart, sends the same body: the receiver deduplicates by `id`.
//!
//! A change of presence ([`of_presence`]) has the same envelope, a random
//! UUID for `id` (it is in no log) and the time it was seen for `ts`; the
//! body is built once, so its retries send the same bytes too.

use protocol::{ChannelId, Kind, Message};
use serde::{Deserialize, Serialize};

/// What happened: by the entry's kind for the log, or a change of presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    MessageCreated,
    MessageUpdated,
    MessageDeleted,
    ChannelOccupied,
    ChannelVacated,
    PresenceJoined,
    PresenceLeft,
}

impl EventType {
    /// Every event a webhook can ask for.
    pub const ALL: [EventType; 7] = [
        EventType::MessageCreated,
        EventType::MessageUpdated,
        EventType::MessageDeleted,
        EventType::ChannelOccupied,
        EventType::ChannelVacated,
        EventType::PresenceJoined,
        EventType::PresenceLeft,
    ];

    /// The events of presence, which come from no log (see
    /// [`super::presence`]).
    pub const PRESENCE: [EventType; 4] = [
        EventType::ChannelOccupied,
        EventType::ChannelVacated,
        EventType::PresenceJoined,
        EventType::PresenceLeft,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventType::MessageCreated => "message.created",
            EventType::MessageUpdated => "message.updated",
            EventType::MessageDeleted => "message.deleted",
            EventType::ChannelOccupied => "channel.occupied",
            EventType::ChannelVacated => "channel.vacated",
            EventType::PresenceJoined => "presence.joined",
            EventType::PresenceLeft => "presence.left",
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

/// A change of a channel's presence, as [`super::presence::diff`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceChange {
    /// No stream anywhere before, `subscribers` now.
    Occupied {
        subscribers: u64,
    },
    /// The last stream closed (or the last node holding one died).
    Vacated,
    Joined {
        name: String,
    },
    Left {
        name: String,
    },
}

impl PresenceChange {
    pub fn event_type(&self) -> EventType {
        match self {
            PresenceChange::Occupied { .. } => EventType::ChannelOccupied,
            PresenceChange::Vacated => EventType::ChannelVacated,
            PresenceChange::Joined { .. } => EventType::PresenceJoined,
            PresenceChange::Left { .. } => EventType::PresenceLeft,
        }
    }

    fn data(&self) -> serde_json::Value {
        match self {
            PresenceChange::Occupied { subscribers } => {
                serde_json::json!({ "subscribers": subscribers })
            }
            PresenceChange::Vacated => serde_json::json!({ "subscribers": 0 }),
            PresenceChange::Joined { name } | PresenceChange::Left { name } => {
                serde_json::json!({ "name": name })
            }
        }
    }
}

/// The envelope of a change of presence, with its data.
#[derive(Serialize)]
struct PresenceEnvelope<'a> {
    id: String,
    #[serde(rename = "type")]
    event_type: &'static str,
    channel: ChannelId,
    ts: &'a str,
    data: serde_json::Value,
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

/// The event for `change` of `channel`, seen at `ts`, with a new id.
pub fn of_presence(
    channel: ChannelId,
    change: &PresenceChange,
    ts: &str,
) -> Result<Event, serde_json::Error> {
    let event_type = change.event_type();
    let envelope = PresenceEnvelope {
        id: uuid::Uuid::new_v4().to_string(),
        event_type: event_type.name(),
        channel,
        ts,
        data: change.data(),
    };
    Ok(Event {
        event_type,
        body: serde_json::to_vec(&envelope)?,
    })
}

/// The time a change was seen, as message times are written.
pub fn now() -> String {
    Message::now_timestamp()
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
    fn a_change_of_presence_has_the_envelope_and_a_fresh_id() {
        let joined = PresenceChange::Joined { name: "ann".into() };
        let event = of_presence(channel(), &joined, "2026-11-21T22:40:00.123Z").expect("JSON");
        assert_eq!(event.event_type, EventType::PresenceJoined);
        let body: Value = serde_json::from_slice(&event.body).expect("JSON");
        assert_eq!(body["type"], "presence.joined");
        assert_eq!(body["channel"], "07070707-0707-0707-0707-070707070707");
        assert_eq!(body["ts"], "2026-11-21T22:40:00.123Z");
        assert_eq!(body["data"], json!({"name": "ann"}));
        let again = of_presence(channel(), &joined, "t").expect("JSON");
        let again: Value = serde_json::from_slice(&again.body).expect("JSON");
        assert_ne!(body["id"], again["id"], "each event its own id");
        let occupied = PresenceChange::Occupied { subscribers: 2 };
        let event = of_presence(channel(), &occupied, "t").expect("JSON");
        let body: Value = serde_json::from_slice(&event.body).expect("JSON");
        assert_eq!(
            (&body["type"], &body["data"]),
            (&json!("channel.occupied"), &json!({"subscribers": 2}))
        );
        let event = of_presence(channel(), &PresenceChange::Vacated, "t").expect("JSON");
        let body: Value = serde_json::from_slice(&event.body).expect("JSON");
        assert_eq!(body["data"], json!({"subscribers": 0}));
    }

    #[test]
    fn an_unreadable_entry_is_an_error() {
        assert!(of_entry(channel(), 1, b"not json").is_err());
        assert!(of_entry(channel(), 1, br#"{"kind":"shout"}"#).is_err());
    }
}
