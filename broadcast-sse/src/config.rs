//! Command-line flags, each with a `CRIER_*` environment fallback.

use std::time::Duration;

use clap::{Args, Parser};
use server::auth::AuthSettings;
use server::mqtt::MqttSettings;
use server::settings::ServerSettings;

/// `broadcast-sse`: Server-Sent-Events fan-out for Crier.
#[derive(Debug, Clone, Parser)]
#[command(name = "broadcast-sse", version, about)]
pub struct Config {
    /// TOML file of settings, keys named as the flags (`durable-ack = false`);
    /// flags and environment variables win over it.
    #[arg(long, env = "CRIER_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "CRIER_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: String,

    #[command(flatten)]
    pub mqtt: MqttSettings,

    /// Base URL of the chat-service whose history fills replays and gaps.
    #[arg(
        long,
        env = "CRIER_HISTORY_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub history_url: String,

    /// Token for reading history from the chat-service when it checks tokens and
    /// no `--jwt-secret` is set to sign one (needs `subscribe: "*"`).
    #[arg(long, env = "CRIER_HISTORY_TOKEN", hide_env_values = true)]
    pub history_token: Option<String>,

    /// Subscribe to every channel's topic with one wildcard instead of one
    /// subscription per watched channel, held while any stream is open: for a
    /// node that sees most traffic anyway (a broker matches each message
    /// against every filter).
    #[arg(long, env = "CRIER_SUBSCRIBE_ALL")]
    pub subscribe_all: bool,

    #[command(flatten)]
    pub auth: AuthSettings,

    #[command(flatten)]
    pub server: ServerSettings,

    #[command(flatten)]
    pub broadcast: BroadcastSettings,
}

/// Stream tuning shared with the all-in-one binary.
#[derive(Debug, Clone, Copy, Args)]
pub struct BroadcastSettings {
    /// Recent messages kept per channel for listeners that resume or fall behind
    /// (the live ring is half of it, at most 16 slots); a listener further behind
    /// is caught up from history.
    #[arg(long, env = "CRIER_RING_SIZE", default_value_t = 1024)]
    pub ring_size: usize,

    /// Seconds between `: keep-alive` comments on idle streams.
    #[arg(long, env = "CRIER_HEARTBEAT_SECS", default_value_t = 15)]
    pub heartbeat_secs: u64,

    /// Reconnect delay suggested to browsers (`retry:`), in milliseconds.
    #[arg(long, env = "CRIER_RETRY_MS", default_value_t = 2000)]
    pub retry_ms: u64,

    /// Open streams one client address may hold (0: no limit).
    #[arg(long, env = "CRIER_MAX_STREAMS_PER_ADDRESS", default_value_t = 1000)]
    pub max_streams_per_address: usize,

    /// Channels one node follows at once; a stream on one more is refused with
    /// `503` (0: no limit).
    #[arg(long, env = "CRIER_MAX_CHANNELS", default_value_t = 100_000)]
    pub max_channels: usize,

    /// Channels one stream of `/events?channel=…` may follow.
    #[arg(long, env = "CRIER_MAX_CHANNELS_PER_STREAM", default_value_t = 32)]
    pub max_channels_per_stream: usize,
}

impl BroadcastSettings {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs.max(1))
    }
}

impl Default for BroadcastSettings {
    fn default() -> Self {
        server::defaults::from_flags()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_settings_default_to_their_documented_flags() {
        let settings = BroadcastSettings::default();
        assert_eq!(
            (
                settings.ring_size,
                settings.heartbeat_secs,
                settings.retry_ms,
                settings.max_streams_per_address,
                settings.max_channels,
                settings.max_channels_per_stream
            ),
            (1024, 15, 2000, 1000, 100_000, 32)
        );
    }
}
