//! MQTT topic names: `{prefix}/channels/{channel}/messages` for messages,
//! `…/signals` for signals (typing, read markers), `…/post` for MQTT posts.

use crate::ChannelId;

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "crier";

/// Longest topic prefix, in bytes; a whole topic must stay far below MQTT's 65,535.
pub const MAX_PREFIX_BYTES: usize = 1024;

/// Checks a `--topic-prefix`: topics are published to, so no wildcards (`+`,
/// `#`), no NUL, and short enough for a topic.
pub fn parse_prefix(raw: &str) -> Result<String, String> {
    if raw.contains(['+', '#', '\0']) {
        return Err(format!(
            "{raw:?} cannot be a topic prefix: MQTT wildcards (+, #) and NUL are not allowed in topics"
        ));
    }
    if raw.len() > MAX_PREFIX_BYTES {
        return Err(format!(
            "a topic prefix may be at most {MAX_PREFIX_BYTES} bytes, this one has {}",
            raw.len()
        ));
    }
    Ok(raw.to_string())
}

/// The topic a channel's messages are published on.
pub fn channel_topic(prefix: &str, channel: ChannelId) -> String {
    format!("{prefix}/channels/{channel}/messages")
}

/// The filter matching every channel's topic, for tools that watch everything.
pub fn all_channels_filter(prefix: &str) -> String {
    format!("{prefix}/channels/+/messages")
}

/// The channel a message topic belongs to, if it is one of ours.
pub fn channel_of(prefix: &str, topic: &str) -> Option<ChannelId> {
    channel_of_kind(prefix, topic, "/messages")
}

/// The topic a channel's signals (typing, read markers) are published on:
/// QoS 0, not retained, never stored.
pub fn signals_topic(prefix: &str, channel: ChannelId) -> String {
    format!("{prefix}/channels/{channel}/signals")
}

/// The filter matching every channel's signals topic.
pub fn all_signals_filter(prefix: &str) -> String {
    format!("{prefix}/channels/+/signals")
}

/// The channel a signals topic belongs to, if it is one of ours.
pub fn signals_channel_of(prefix: &str, topic: &str) -> Option<ChannelId> {
    channel_of_kind(prefix, topic, "/signals")
}

/// The channel of `{prefix}/channels/{channel}{suffix}`.
fn channel_of_kind(prefix: &str, topic: &str, suffix: &str) -> Option<ChannelId> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix("/channels/")?;
    let channel = rest.strip_suffix(suffix)?;
    ChannelId::parse(channel).ok()
}

/// The topic MQTT clients post a message to a channel on (chat-service takes it).
pub fn post_topic(prefix: &str, channel: ChannelId) -> String {
    format!("{prefix}/channels/{channel}/post")
}

/// The filter matching every channel's post topic.
pub fn all_posts_filter(prefix: &str) -> String {
    format!("{prefix}/channels/+/post")
}

/// The channel segment of a post topic, as sent (not yet checked to be a UUID).
pub fn post_channel_segment<'a>(prefix: &str, topic: &'a str) -> Option<&'a str> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix("/channels/")?;
    rest.strip_suffix("/post")
}

/// Where chat-service reports MQTT posts it refused.
pub fn errors_topic(prefix: &str) -> String {
    format!("{prefix}/errors")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_with_wildcards_nul_or_too_many_bytes_are_refused() {
        assert_eq!(parse_prefix("crier/eu-1").as_deref(), Ok("crier/eu-1"));
        for bad in ["crier/+", "crier/#", "a\0b"] {
            assert!(parse_prefix(bad).is_err(), "{bad:?}");
        }
        assert!(parse_prefix(&"p".repeat(MAX_PREFIX_BYTES)).is_ok());
        assert!(parse_prefix(&"p".repeat(MAX_PREFIX_BYTES + 1)).is_err());
    }

    #[test]
    fn channel_of_inverts_channel_topic() {
        let id = ChannelId::parse("6f9619ff-8b86-d011-b42d-00cf4fc964ff").expect("uuid");
        let topic = channel_topic("crier", id);
        assert_eq!(
            topic,
            "crier/channels/6f9619ff-8b86-d011-b42d-00cf4fc964ff/messages"
        );
        assert_eq!(channel_of("crier", &topic), Some(id));
        assert_eq!(channel_of("other", &topic), None);
        assert_eq!(channel_of("crier", "crier/channels/x/messages"), None);
    }

    #[test]
    fn signals_channel_of_inverts_signals_topic_and_tells_it_from_messages() {
        let id = ChannelId::parse("6f9619ff-8b86-d011-b42d-00cf4fc964ff").expect("uuid");
        let topic = signals_topic("crier", id);
        assert_eq!(topic, format!("crier/channels/{id}/signals"));
        assert_eq!(signals_channel_of("crier", &topic), Some(id));
        assert_eq!(channel_of("crier", &topic), None);
        assert_eq!(
            signals_channel_of("crier", &channel_topic("crier", id)),
            None
        );
        assert_eq!(all_signals_filter("crier"), "crier/channels/+/signals");
    }

    #[test]
    fn post_channel_segment_inverts_post_topic() {
        let id = ChannelId::parse("6f9619ff-8b86-d011-b42d-00cf4fc964ff").expect("uuid");
        let topic = post_topic("crier", id);
        assert_eq!(topic, format!("crier/channels/{id}/post"));
        assert_eq!(
            post_channel_segment("crier", &topic),
            Some("6f9619ff-8b86-d011-b42d-00cf4fc964ff")
        );
        assert_eq!(
            post_channel_segment("crier", "crier/channels/x/post"),
            Some("x")
        );
        assert_eq!(
            post_channel_segment("crier", &channel_topic("crier", id)),
            None
        );
        assert_eq!(post_channel_segment("other", &topic), None);
    }
}
