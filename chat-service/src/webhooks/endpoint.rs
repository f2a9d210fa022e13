//! One `--webhook-url`: where events go, which events, and the webhook's
//! identity in the store.
//!
//! The events a webhook wants are named in the URL's fragment, which no HTTP
//! client sends: `http://app.local/hooks#events=message.created,message.deleted`
//! (or `message.*`, `presence.*`, `channel.vacated`, or `*`). No fragment:
//! every event, presence events included.

use std::fmt;

use sha2::{Digest, Sha256};

use super::event::EventType;
use crate::app_url::{self, redacted};

/// A webhook: the URL it is POSTed to (without the fragment), its filter, and
/// an id derived from that URL, the same at every start.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: reqwest::Url,
    filter: EventFilter,
    id: u64,
}

/// The events a webhook wants: each pattern is an event type, a prefix
/// ending in `.*`, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    patterns: Vec<String>,
}

impl Endpoint {
    /// Parses `http(s)://host/path#events=a,b`: a URL with a host, and an
    /// optional filter of known event types.
    pub fn parse(raw: &str) -> Result<Endpoint, String> {
        let mut url = app_url::parse(raw, "http://127.0.0.1:3000/crier-events")?;
        let fragment = url.fragment().map(str::to_string);
        url.set_fragment(None);
        let filter = match fragment.as_deref() {
            None | Some("") => EventFilter::everything(),
            Some(fragment) => EventFilter::parse_fragment(fragment)
                .map_err(|e| format!("the webhook {}: {e}", redacted(&url)))?,
        };
        let id = id_of(&url);
        Ok(Endpoint { url, filter, id })
    }

    /// Where events are POSTed.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// The webhook's key in the store: the same for the same URL (its
    /// fragment aside) at every start, so its cursors are found again.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn wants(&self, event: EventType) -> bool {
        self.filter.matches(event.name())
    }

    /// The URL without what may be a secret, for logs.
    pub fn shown(&self) -> String {
        redacted(&self.url)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.shown())
            .field("filter", &self.filter)
            .finish()
    }
}

impl EventFilter {
    pub fn everything() -> Self {
        EventFilter {
            patterns: vec!["*".to_string()],
        }
    }

    /// Reads `events=a,b,…` (percent-decoded), each a known event type, a
    /// prefix of known ones followed by `.*`, or `*`.
    pub fn parse_fragment(fragment: &str) -> Result<Self, String> {
        let fragment = percent_encoding::percent_decode_str(fragment).decode_utf8_lossy();
        let Some(list) = fragment.strip_prefix("events=") else {
            return Err(format!(
                "the fragment {fragment:?} is not events=TYPE,TYPE (like events=message.created,message.deleted)"
            ));
        };
        let patterns = list
            .split(',')
            .map(str::trim)
            .map(checked_pattern)
            .collect::<Result<Vec<_>, _>>()?;
        if patterns.is_empty() {
            return Err("events= names no event type".to_string());
        }
        Ok(EventFilter { patterns })
    }

    pub fn matches(&self, event: &str) -> bool {
        self.patterns
            .iter()
            .any(|pattern| pattern_matches(pattern, event))
    }
}

/// A pattern that matches at least one known event type.
fn checked_pattern(pattern: &str) -> Result<String, String> {
    let known = EventType::ALL
        .iter()
        .any(|e| pattern_matches(pattern, e.name()));
    if !known {
        let names: Vec<&str> = EventType::ALL.iter().map(|e| e.name()).collect();
        return Err(format!(
            "{pattern:?} names no event; known: {}, a prefix like message.*, or *",
            names.join(", ")
        ));
    }
    Ok(pattern.to_string())
}

fn pattern_matches(pattern: &str, event: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => prefix.ends_with('.') && event.starts_with(prefix),
        None => pattern == event,
    }
}

/// The first 8 bytes of the SHA-256 of the URL.
fn id_of(url: &reqwest::Url) -> u64 {
    let digest = Sha256::digest(url.as_str().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_fragment_wants_every_event() {
        let endpoint = Endpoint::parse("http://app.local/hooks").expect("valid");
        assert!(EventType::ALL.iter().all(|e| endpoint.wants(*e)));
        assert_eq!(endpoint.url().as_str(), "http://app.local/hooks");
    }

    #[test]
    fn a_fragment_names_the_events_and_is_not_part_of_the_url() {
        let endpoint =
            Endpoint::parse("http://app.local/hooks#events=message.created,message.deleted")
                .expect("valid");
        assert!(endpoint.wants(EventType::MessageCreated));
        assert!(endpoint.wants(EventType::MessageDeleted));
        assert!(!endpoint.wants(EventType::MessageUpdated));
        assert_eq!(endpoint.url().as_str(), "http://app.local/hooks");
        let all = Endpoint::parse("http://app.local/hooks").expect("valid");
        assert_eq!(endpoint.id(), all.id(), "the filter is not the identity");
    }

    #[test]
    fn a_prefix_or_a_star_matches_many() {
        let filter = EventFilter::parse_fragment("events=message.*").expect("valid");
        assert!(filter.matches("message.updated"));
        assert!(!filter.matches("messages.updated"));
        let filter = EventFilter::parse_fragment("events=%2A").expect("percent-encoded *");
        assert!(filter.matches("message.created"));
    }

    #[test]
    fn presence_and_channel_events_are_filtered_like_messages() {
        let endpoint =
            Endpoint::parse("http://app.local/h#events=presence.*,channel.occupied").expect("ok");
        assert!(endpoint.wants(EventType::PresenceJoined));
        assert!(endpoint.wants(EventType::PresenceLeft));
        assert!(endpoint.wants(EventType::ChannelOccupied));
        assert!(!endpoint.wants(EventType::ChannelVacated));
        assert!(!endpoint.wants(EventType::MessageCreated));
        let messages = Endpoint::parse("http://app.local/h#events=message.*").expect("ok");
        assert!(EventType::PRESENCE.iter().all(|e| !messages.wants(*e)));
    }

    #[test]
    fn unknown_events_and_other_fragments_are_refused() {
        for bad in [
            "events=",
            "events=message.sent",
            "events=mess*",
            "events=chat.*",
            "message.created",
            "top",
        ] {
            assert!(EventFilter::parse_fragment(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_http_urls_with_a_host_are_webhooks() {
        for bad in [
            "",
            "app.local/hooks",
            "ftp://app.local/",
            "unix:/run/app.sock",
            "http://app.local/#events=nope",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Endpoint::parse("https://app.example/hooks?k=v").is_ok());
    }

    #[test]
    fn the_id_is_stable_and_differs_between_urls() {
        let a = Endpoint::parse("http://app.local/a").expect("valid");
        let b = Endpoint::parse("http://app.local/b").expect("valid");
        assert_eq!(
            a.id(),
            Endpoint::parse("http://app.local/a").expect("valid").id()
        );
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn logs_show_no_credentials() {
        let endpoint = Endpoint::parse("https://u:p@app.example/h?token=t#events=*").expect("ok");
        assert_eq!(endpoint.shown(), "https://app.example/h");
    }
}
