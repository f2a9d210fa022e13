//! What a token says: its claims, and grants of channels.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;

use crate::ChannelId;

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub name: Option<String>,
    /// Public information about the holder, broadcast with what it posts.
    pub user: Option<Value>,
    pub publish: Grant,
    pub subscribe: Grant,
    pub admin: bool,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
    /// The payload as the app signed it, every claim included (also those
    /// Crier does not read): what the publish hook is shown.
    pub payload: Value,
}

/// A token's payload as it is written; [`Claims`] is what it grants.
#[derive(Deserialize)]
pub struct RawClaims {
    name: Option<String>,
    user: Option<Value>,
    #[serde(rename = "_public")]
    public: Option<Value>,
    #[serde(default)]
    channels: Grant,
    #[serde(default)]
    subscribe: Grant,
    #[serde(default)]
    admin: bool,
    exp: u64,
}

impl Claims {
    /// What `raw` grants; `payload` is the JSON it was read from.
    pub fn new(raw: RawClaims, payload: Value) -> Self {
        let user = raw.user.or(raw.public).filter(Value::is_object);
        Claims {
            payload,
            name: raw.name,
            user,
            publish: raw.channels,
            subscribe: raw.subscribe,
            admin: raw.admin,
            expires_at: raw.exp,
        }
    }
}

/// The channels a claim covers: all (`"*"`), or a list (entries that are not
/// channel ids grant nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Grant {
    All,
    Channels(HashSet<ChannelId>),
    #[default]
    Nothing,
}

impl Grant {
    pub fn allows(&self, channel: ChannelId) -> bool {
        match self {
            Grant::All => true,
            Grant::Channels(channels) => channels.contains(&channel),
            Grant::Nothing => false,
        }
    }
}

impl<'de> Deserialize<'de> for Grant {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let entries = match Raw::deserialize(deserializer)? {
            Raw::One(entry) => vec![entry],
            Raw::Many(entries) => entries,
        };
        if entries.iter().any(|entry| entry == "*") {
            return Ok(Grant::All);
        }
        let channels = entries
            .iter()
            .filter_map(|entry| ChannelId::parse(entry).ok())
            .collect();
        Ok(Grant::Channels(channels))
    }
}
