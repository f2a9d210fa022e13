//! Flags of the all-in-one binary, each with a `CRIER_*` environment fallback.

use broadcast_sse::config::BroadcastSettings;
use chat_service::config::ChatSettings;
use clap::Parser;
use protocol::topic::DEFAULT_PREFIX;
use server::auth::AuthSettings;
use server::settings::ServerSettings;

/// `crier`: chat fan-out on one port — REST ingest, SSE streams, an embedded MQTT
/// broker and the demo page.
#[derive(Debug, Clone, Parser)]
#[command(name = "crier", version, about)]
pub struct Config {
    /// TOML file of settings, keys named as the flags (`durable-ack = false`);
    /// flags and environment variables win over it.
    #[arg(long, env = "CRIER_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    /// Address to listen on for HTTP (API, streams and the demo page).
    #[arg(long, env = "CRIER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Use this broker (`mqtt://[user:pass@]host:port`, or `mqtts://…` for TLS)
    /// instead of the embedded one.
    #[arg(long, env = "CRIER_MQTT_URL")]
    pub mqtt_url: Option<String>,

    /// PEM file of the CA that signed an `mqtts://` broker's certificate (default:
    /// the system's trusted roots).
    #[arg(long, env = "CRIER_MQTT_CA_FILE", requires = "mqtt_url")]
    pub mqtt_ca_file: Option<std::path::PathBuf>,

    /// Where the embedded broker listens; port 0 picks a free port. Set
    /// `127.0.0.1:1883` to let MQTT clients such as `mosquitto_sub` watch.
    #[arg(
        long,
        env = "CRIER_EMBEDDED_BROKER_LISTEN",
        default_value = "127.0.0.1:0",
        conflicts_with = "mqtt_url"
    )]
    pub embedded_broker_listen: String,

    /// Also serve MQTT over WebSocket on this address (e.g. `127.0.0.1:8083`;
    /// port 0 picks a free port), so browser MQTT clients can join without
    /// Mosquitto. Off by default.
    #[arg(
        long,
        env = "CRIER_EMBEDDED_BROKER_WS_LISTEN",
        conflicts_with = "mqtt_url"
    )]
    pub embedded_broker_ws_listen: Option<String>,

    /// Topic prefix: messages go to `{prefix}/channels/{uuid}/messages`.
    #[arg(
        long,
        env = "CRIER_TOPIC_PREFIX",
        default_value = DEFAULT_PREFIX,
        value_parser = protocol::topic::parse_prefix
    )]
    pub topic_prefix: String,

    #[command(flatten)]
    pub chat: ChatSettings,

    #[command(flatten)]
    pub broadcast: BroadcastSettings,

    #[command(flatten)]
    pub auth: AuthSettings,

    #[command(flatten)]
    pub server: ServerSettings,
}
