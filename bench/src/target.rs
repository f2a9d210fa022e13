//! The system under test as URL and body templates, so one generator drives
//! Crier and its peers: `{channel}` becomes the channel's UUID, `{text}` the
//! stamped message text, `{seq}` its sequence number.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{0}: only http:// URLs are supported")]
    Scheme(String),
    #[error("{0}: cannot resolve the host")]
    Resolve(String),
}

/// An `http://host:port/path` URL whose path may hold placeholders.
#[derive(Debug, Clone)]
pub struct UrlTemplate {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
    /// Path and query, with placeholders.
    pub path: String,
}

impl UrlTemplate {
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| TargetError::Scheme(url.to_owned()))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| TargetError::Resolve(url.to_owned()))?;
        Ok(Self {
            addr,
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The path for one channel.
    pub fn path_for(&self, channel: &str) -> String {
        self.path.replace("{channel}", channel)
    }

    /// Whether source addresses from 127.0.0.0/8 can reach the target.
    pub fn is_loopback(&self) -> bool {
        self.addr.ip().is_loopback()
    }
}

/// The UUID of channel `index`: the same for every run with the same salt,
/// so subscribers in other processes and the publisher agree without talking.
pub fn channel_id(salt: u32, index: u64) -> String {
    format!(
        "{salt:08x}-b3c4-4000-8000-{:012x}",
        index & 0xffff_ffff_ffff
    )
}

/// The text a publisher sends; subscribers find it with `sse::find_stamp`.
/// `acked`: every message of the channel up to this number was acknowledged
/// before this one was sent, so the server must deliver those first.
pub fn stamp_text(seq: u64, nanos: u64, acked: u64) -> String {
    format!("bench {seq} {nanos} {acked}")
}

/// Fills a body template.
pub fn render_body(template: &str, channel: &str, seq: u64, text: &str) -> String {
    template
        .replace("{channel}", channel)
        .replace("{seq}", &seq.to_string())
        .replace("{text}", text)
}

/// Source address number `i` of `count` (127.0.0.2, 127.0.0.3, …), or none.
pub fn source_ip(i: u64, count: u32) -> Option<IpAddr> {
    if count == 0 {
        return None;
    }
    let n = 2 + (i % u64::from(count)) as u32;
    Some(IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_splits_host_and_path() {
        let t = UrlTemplate::parse("http://127.0.0.1:8090/sub/{channel}").expect("valid");
        assert_eq!(t.addr, "127.0.0.1:8090".parse().expect("addr"));
        assert_eq!(t.host, "127.0.0.1:8090");
        assert_eq!(t.path_for("abc"), "/sub/abc");
        assert!(t.is_loopback());
        assert!(UrlTemplate::parse("https://127.0.0.1/").is_err());
    }

    #[test]
    fn channel_ids_are_uuids_and_distinct() {
        assert_eq!(channel_id(0, 0), "00000000-b3c4-4000-8000-000000000000");
        assert_eq!(channel_id(7, 4095), "00000007-b3c4-4000-8000-000000000fff");
    }

    #[test]
    fn body_template_gets_the_stamp() {
        let text = stamp_text(3, 99, 1);
        assert_eq!(
            render_body(r#"{"author":"bench","text":"{text}"}"#, "c", 3, &text),
            r#"{"author":"bench","text":"bench 3 99 1"}"#
        );
    }

    #[test]
    fn source_addresses_cycle_from_127_0_0_2() {
        assert_eq!(source_ip(0, 3), Some("127.0.0.2".parse().expect("ip")));
        assert_eq!(source_ip(4, 3), Some("127.0.0.3".parse().expect("ip")));
        assert_eq!(source_ip(4, 0), None);
    }
}
