//! MQTT topic names: `{prefix}/channels/{channel}/messages`.

use crate::ChannelId;

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "crier";

/// The topic a channel's messages are published on.
pub fn channel_topic(prefix: &str, channel: ChannelId) -> String {
    format!("{prefix}/channels/{channel}/messages")
}

/// The filter matching every channel's topic, for tools that watch everything.
pub fn all_channels_filter(prefix: &str) -> String {
    format!("{prefix}/channels/+/messages")
}

/// The channel a topic belongs to, if it is one of ours.
pub fn channel_of(prefix: &str, topic: &str) -> Option<ChannelId> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix("/channels/")?;
    let channel = rest.strip_suffix("/messages")?;
    ChannelId::parse(channel).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
