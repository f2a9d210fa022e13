//! Channel identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// A channel is named by any UUID; the canonical form is lowercase and hyphenated,
/// so `ABC…` and `abc…` name the same channel everywhere (storage keys, topics, URLs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, utoipa::ToSchema)]
#[schema(example = "6f9619ff-8b86-d011-b42d-00cf4fc964ff")]
pub struct ChannelId(Uuid);

/// Returned when a path segment is not a UUID.
#[derive(Debug, thiserror::Error)]
#[error("channel must be a UUID, got {0:?}")]
pub struct InvalidChannel(pub String);

impl ChannelId {
    /// Accepts the hyphenated form only (upper or lower case): the other forms
    /// `uuid` understands (braced, URN, simple) are not what users type in a URL.
    pub fn parse(raw: &str) -> Result<Self, InvalidChannel> {
        if raw.len() != 36 {
            return Err(InvalidChannel(shorten(raw)));
        }
        Uuid::try_parse(raw)
            .map(ChannelId)
            .map_err(|_| InvalidChannel(shorten(raw)))
    }

    /// The 16 bytes used as a storage key prefix: fixed width, so a range scan over
    /// one channel never touches another.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Rebuilds an id from a storage key prefix.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        ChannelId(Uuid::from_bytes(bytes))
    }

    pub fn from_uuid(uuid: Uuid) -> Self {
        ChannelId(uuid)
    }
}

/// Keeps error messages short when someone sends a megabyte as a channel name.
fn shorten(raw: &str) -> String {
    raw.chars().take(64).collect()
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({self})")
    }
}

impl FromStr for ChannelId {
    type Err = InvalidChannel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelId::parse(s)
    }
}

impl Serialize for ChannelId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChannelId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        ChannelId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_any_case_and_displays_lowercase() {
        let id = ChannelId::parse("6F9619FF-8B86-D011-B42D-00CF4FC964FF").expect("valid uuid");
        assert_eq!(id.to_string(), "6f9619ff-8b86-d011-b42d-00cf4fc964ff");
    }

    #[test]
    fn parse_rejects_non_uuids_and_other_uuid_forms() {
        for raw in [
            "",
            "general",
            "6f9619ff8b86d011b42d00cf4fc964ff",
            "{6f9619ff-8b86-d011-b42d-00cf4fc964ff}",
            "6f9619ff-8b86-d011-b42d-00cf4fc964fg",
        ] {
            assert!(ChannelId::parse(raw).is_err(), "{raw:?} must be rejected");
        }
    }

    #[test]
    fn bytes_round_trip() {
        let id = ChannelId::parse("6f9619ff-8b86-d011-b42d-00cf4fc964ff").expect("valid uuid");
        assert_eq!(ChannelId::from_bytes(*id.as_bytes()), id);
    }
}
