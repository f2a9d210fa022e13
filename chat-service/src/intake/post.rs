//! One MQTT post: `{"author":"…","text":"…","key":"…"}` on
//! `{prefix}/channels/{uuid}/post`, checked exactly like a REST post and turned
//! into a store entry.

use protocol::ChannelId;
use protocol::topic::post_channel_segment;
use rumqttc::{Publish, QoS};
use serde::Deserialize;

use crate::AppState;
use crate::body::parse_fields;
use crate::domain::NewMessage;
use crate::error::ChatError;
use crate::routes::messages::check_idempotency_key;
use crate::store::Entry;

/// Only the key: `author` and `text` are read by [`parse_fields`], as for REST.
#[derive(Deserialize)]
struct KeyField {
    key: Option<serde_json::Value>,
}

/// The store entry for a post, or why it is refused.
pub fn entry(state: &AppState, prefix: &str, publish: &Publish) -> Result<Entry, ChatError> {
    let (entry, key) = checked(state, prefix, &publish.topic, &publish.payload)?;
    Ok(match key {
        Some(key) => entry.with_key(Some(key)),
        None => with_delivery_key(entry, publish),
    })
}

/// A post on `topic` checked exactly like a REST post: its entry without a
/// key, and the post's own `key` when it has one.
pub fn checked(
    state: &AppState,
    prefix: &str,
    topic: &str,
    payload: &[u8],
) -> Result<(Entry, Option<String>), ChatError> {
    let segment = post_channel_segment(prefix, topic).unwrap_or(topic);
    let channel = ChannelId::parse(segment)?;
    let limits = &state.limits;
    if payload.len() > limits.max_body_bytes {
        return Err(ChatError::PayloadTooLarge {
            limit: limits.max_body_bytes,
        });
    }
    let fields = parse_fields(Some("application/json"), payload, None)?;
    let message = NewMessage::parse(fields.author.as_deref(), fields.text.as_deref(), limits)?;
    state.bans.check(channel, message.author.as_str())?;
    Ok((Entry::new(channel, message), explicit_key(payload)?))
}

/// The entry the publish hook lets through (maybe with a new text), or its
/// refusal; the entry as it is without a hook. MQTT posts carry no token, so
/// the app gets no claims.
pub async fn ask_the_app(state: &AppState, mut entry: Entry) -> Result<Entry, ChatError> {
    let Some(hook) = &state.publish_hook else {
        return Ok(entry);
    };
    entry.message = hook
        .check(entry.channel, entry.message, None, &state.limits)
        .await?;
    Ok(entry)
}

/// The `key` field: an idempotency key like REST's `Idempotency-Key`.
fn explicit_key(payload: &[u8]) -> Result<Option<String>, ChatError> {
    // The payload already parsed as a JSON object in `parse_fields`.
    let fields: KeyField = serde_json::from_slice(payload)
        .map_err(|e| ChatError::InvalidJson(format!("invalid post: {e}")))?;
    match fields.key {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(key)) => {
            check_idempotency_key(&key, "key").map(|key| Some(key.to_string()))
        }
        Some(_) => Err(ChatError::InvalidIdempotencyKey(
            "key must be a string".to_string(),
        )),
    }
}

/// A QoS 1 post without a key gets one derived from its delivery, so that the
/// broker's redelivery of a post whose acknowledgement was lost (the
/// chat-service stopped after storing it) is recognised and not stored twice.
///
/// The key is the post's topic and payload hashed, with the packet id the broker
/// gave it. Packet ids are reused, so an identical post could derive the same key
/// much later: only a delivery flagged as a redelivery looks the key up; a first
/// delivery records it for its own message ([`Entry::key_is_new`]).
fn with_delivery_key(mut entry: Entry, publish: &Publish) -> Entry {
    if publish.qos == QoS::AtMostOnce {
        return entry;
    }
    entry.idempotency_key = Some(delivery_key(publish));
    entry.key_is_new = !publish.dup;
    entry
}

fn delivery_key(publish: &Publish) -> String {
    let mut content = Vec::with_capacity(publish.topic.len() + 1 + publish.payload.len());
    content.extend_from_slice(publish.topic.as_bytes());
    content.push(0);
    content.extend_from_slice(&publish.payload);
    let digest = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &content);
    format!("mqtt-{}-{}", digest.simple(), publish.pkid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(topic: &str, payload: &str, pkid: u16, dup: bool) -> Publish {
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload.as_bytes().to_vec());
        publish.pkid = pkid;
        publish.dup = dup;
        publish
    }

    #[test]
    fn the_delivery_key_names_topic_payload_and_packet_id() {
        let a = publish("p/channels/x/post", r#"{"text":"hi"}"#, 7, false);
        let same = publish("p/channels/x/post", r#"{"text":"hi"}"#, 7, true);
        let other_id = publish("p/channels/x/post", r#"{"text":"hi"}"#, 8, false);
        let other_text = publish("p/channels/x/post", r#"{"text":"ho"}"#, 7, false);
        assert_eq!(delivery_key(&a), delivery_key(&same));
        assert_ne!(delivery_key(&a), delivery_key(&other_id));
        assert_ne!(delivery_key(&a), delivery_key(&other_text));
        assert!(delivery_key(&a).len() <= 255);
    }

    #[test]
    fn only_a_redelivery_looks_its_delivery_key_up() {
        let limits = crate::config::Limits::default();
        let message = NewMessage::parse(Some("ann"), Some("hi"), &limits).expect("valid");
        let channel = ChannelId::from_bytes([1; 16]);
        let first = with_delivery_key(
            Entry::new(channel, message.clone()),
            &publish("t", "{}", 1, false),
        );
        let again = with_delivery_key(
            Entry::new(channel, message.clone()),
            &publish("t", "{}", 1, true),
        );
        assert!(first.key_is_new);
        assert!(!again.key_is_new);
        assert_eq!(first.idempotency_key, again.idempotency_key);
        let mut at_most_once = publish("t", "{}", 0, false);
        at_most_once.qos = QoS::AtMostOnce;
        let unkeyed = with_delivery_key(Entry::new(channel, message), &at_most_once);
        assert_eq!(unkeyed.idempotency_key, None);
    }

    #[test]
    fn a_key_must_be_a_short_visible_string() {
        assert_eq!(explicit_key(br#"{"text":"a"}"#).ok(), Some(None));
        assert_eq!(
            explicit_key(br#"{"key":"k-1"}"#).ok(),
            Some(Some("k-1".to_string()))
        );
        for bad in [r#"{"key":""}"#, r#"{"key":"a b"}"#, r#"{"key":7}"#] {
            assert!(
                matches!(
                    explicit_key(bad.as_bytes()),
                    Err(ChatError::InvalidIdempotencyKey(_))
                ),
                "{bad}"
            );
        }
    }
}
