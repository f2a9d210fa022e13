//! Broker settings every binary shares, and `mqtt://` / `mqtts://` URL parsing.

pub mod connection;
pub mod requests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use rumqttc::MqttOptions;
use url::Url;

use protocol::topic::DEFAULT_PREFIX;

/// Largest MQTT packet either side accepts. A message JSON is at most a few times the
/// 64 KiB body limit (escaping), and rumqttc's 10 KiB default would tear the
/// connection down on the first long message.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// `--mqtt-url` and `--topic-prefix`, flattened into each binary's flags.
#[derive(Debug, Clone, Args)]
pub struct MqttSettings {
    /// Broker to use: `mqtt://[user:pass@]host:port` (port defaults to 1883), or
    /// `mqtts://…` for TLS (port defaults to 8883).
    #[arg(long, env = "CRIER_MQTT_URL", default_value = "mqtt://127.0.0.1:1883")]
    pub mqtt_url: String,

    /// PEM file of the CA that signed an `mqtts://` broker's certificate (default:
    /// the system's trusted roots).
    #[arg(long, env = "CRIER_MQTT_CA_FILE")]
    pub mqtt_ca_file: Option<PathBuf>,

    /// Topic prefix: messages go to `{prefix}/channels/{uuid}/messages`.
    #[arg(
        long,
        env = "CRIER_TOPIC_PREFIX",
        default_value = DEFAULT_PREFIX,
        value_parser = protocol::topic::parse_prefix
    )]
    pub topic_prefix: String,
}

/// Why a broker URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum MqttUrlError {
    #[error("invalid broker URL {url:?}: {reason}")]
    Invalid { url: String, reason: String },
    #[error("broker URL scheme must be mqtt:// or mqtts://, got {0:?}")]
    Scheme(String),
    #[error("broker TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl MqttSettings {
    /// The broker to connect to, with TLS set up for `mqtts://`.
    pub fn broker(&self) -> Result<BrokerUrl, MqttUrlError> {
        BrokerUrl::parse(&self.mqtt_url, self.mqtt_ca_file.as_deref())
    }
}

/// A parsed broker address with optional credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `Some` for `mqtts://`.
    pub tls: Option<TlsClient>,
}

/// The TLS client configuration of an `mqtts://` broker.
#[derive(Clone)]
pub struct TlsClient(pub Arc<rustls::ClientConfig>);

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient")
    }
}

impl PartialEq for TlsClient {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for TlsClient {}

impl BrokerUrl {
    /// `ca_file`: for `mqtts://`, the CAs to trust instead of the system's roots.
    pub fn parse(raw: &str, ca_file: Option<&Path>) -> Result<Self, MqttUrlError> {
        let invalid = |reason: &str| MqttUrlError::Invalid {
            url: redact(raw),
            reason: reason.to_string(),
        };
        let url = Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
        let (default_port, tls) = match url.scheme() {
            "mqtt" | "tcp" => (1883, None),
            "mqtts" | "ssl" => (8883, Some(TlsClient(crate::tls::client_config(ca_file)?))),
            other => return Err(MqttUrlError::Scheme(other.to_string())),
        };
        let host = url.host_str().ok_or_else(|| invalid("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let username = Some(decode(url.username())).filter(|u| !u.is_empty());
        let password = url.password().map(decode);
        Ok(BrokerUrl {
            host,
            port: url.port().unwrap_or(default_port),
            username,
            password,
            tls,
        })
    }

    /// rumqttc options for this broker. `client_id` must be unique per process: a
    /// broker disconnects the older of two clients with the same id.
    pub fn options(&self, client_id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, self.host.clone(), self.port);
        options.set_keep_alive(Duration::from_secs(10));
        options.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        if let Some(username) = &self.username {
            options.set_credentials(username.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            let config = rumqttc::TlsConfiguration::Rustls(tls.0.clone());
            options.set_transport(rumqttc::Transport::Tls(config));
        }
        options
    }
}

/// Percent-decodes a URL's user or password (RFC 3986 userinfo: a `+` is a
/// plus, not a space as in a form).
fn decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

/// The URL without its password, for logs and error messages.
pub fn redact(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => raw.to_string(),
    }
}

/// Whether a service's broker connection is up, for `/readyz`, and how many
/// connections it has made. Written by the task that polls the connection,
/// read by request handlers and by tasks that must act on every new
/// connection, however quickly it replaced the last.
#[derive(Debug, Clone, Default)]
pub struct BrokerStatus(Arc<Status>);

#[derive(Debug, Default)]
struct Status {
    connected: AtomicBool,
    connections: AtomicU64,
}

impl BrokerStatus {
    pub fn is_connected(&self) -> bool {
        self.0.connected.load(Ordering::Relaxed)
    }

    pub fn set(&self, connected: bool) {
        let was = self.0.connected.swap(connected, Ordering::Relaxed);
        if connected && !was {
            self.0.connections.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connections made so far: a change means a new one, even when the
    /// connection looks as up as before.
    pub fn connections(&self) -> u64 {
        self.0.connections.load(Ordering::Relaxed)
    }
}

/// A client id unique to this process and role, so several nodes (and several
/// processes on one machine) never kick each other off the broker.
pub fn client_id(role: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("crier-{role}-{}-{nanos:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_counts_as_a_new_connection_however_fast() {
        let status = BrokerStatus::default();
        status.set(true);
        status.set(true);
        assert_eq!(status.connections(), 1, "still the first");
        status.set(false);
        status.set(true);
        assert!(status.is_connected());
        assert_eq!(status.connections(), 2);
    }

    #[test]
    fn parses_host_port_and_credentials() {
        let url = BrokerUrl::parse("mqtt://crier:p%40ss@127.0.0.1:1884", None).expect("valid");
        assert_eq!(url.host, "127.0.0.1");
        assert_eq!(url.port, 1884);
        assert_eq!(url.username.as_deref(), Some("crier"));
        assert_eq!(url.password.as_deref(), Some("p@ss"));
    }

    #[test]
    fn a_password_keeps_plus_percent_at_and_colon() {
        let raw = "mqtt://cr%2Bier:a+b%25c%40d%3Ae:f&g=h@127.0.0.1";
        let url = BrokerUrl::parse(raw, None).expect("valid");
        assert_eq!(url.username.as_deref(), Some("cr+ier"));
        assert_eq!(url.password.as_deref(), Some("a+b%c@d:e:f&g=h"));
        let login = url.options("test").credentials().expect("credentials");
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("cr+ier", "a+b%c@d:e:f&g=h"),
            "the broker is sent the password as written"
        );
    }

    #[test]
    fn port_defaults_to_1883() {
        let url = BrokerUrl::parse("mqtt://localhost", None).expect("valid");
        assert_eq!(url.port, 1883);
        assert_eq!(url.username, None);
    }

    #[test]
    fn rejects_other_schemes_and_garbage() {
        assert!(matches!(
            BrokerUrl::parse("http://localhost:1883", None),
            Err(MqttUrlError::Scheme(_))
        ));
        assert!(BrokerUrl::parse("not a url", None).is_err());
    }

    #[test]
    fn redact_hides_the_password() {
        assert_eq!(
            redact("mqtt://crier:secret@host:1883"),
            "mqtt://crier:***@host:1883"
        );
    }
}
