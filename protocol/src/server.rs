//! HTTP server settings every binary shares: cross-origin access and time limits.

use std::time::Duration;

use clap::Args;

use crate::cors::CorsSettings;

#[derive(Debug, Clone, Args)]
pub struct ServerSettings {
    #[command(flatten)]
    pub cors: CorsSettings,

    /// Milliseconds a client may take to send a request's headers (slow clients
    /// holding connections open are cut off with `408`).
    #[arg(long, env = "CRIER_REQUEST_HEADER_TIMEOUT_MS", default_value_t = 5000)]
    pub request_header_timeout_ms: u64,
}

impl ServerSettings {
    pub fn request_header_timeout(&self) -> Duration {
        Duration::from_millis(self.request_header_timeout_ms.max(1))
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            cors: CorsSettings::default(),
            request_header_timeout_ms: 5000,
        }
    }
}
