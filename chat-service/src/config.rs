//! Command-line flags, each with a `CRIER_*` environment fallback.

use std::path::PathBuf;

use clap::{Args, Parser};
use protocol::mqtt::MqttSettings;

/// `chat-service`: REST ingest and history for Crier.
#[derive(Debug, Clone, Parser)]
#[command(name = "chat-service", version, about)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "CRIER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    #[command(flatten)]
    pub mqtt: MqttSettings,

    #[command(flatten)]
    pub chat: ChatSettings,
}

/// What the chat-service needs besides its address and broker; shared with the
/// all-in-one binary.
#[derive(Debug, Clone, Args)]
pub struct ChatSettings {
    /// Directory of the sled database holding history.
    #[arg(long, env = "CRIER_DATA_DIR", default_value = "./crier-data")]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub limits: Limits,
}

/// Input limits; every violation is a `400` (or `413` for the body) with a JSON error.
#[derive(Debug, Clone, Copy, Args)]
pub struct Limits {
    /// Longest author name, in characters.
    #[arg(long, env = "CRIER_MAX_AUTHOR_CHARS", default_value_t = 64)]
    pub max_author_chars: usize,

    /// Longest message text, in characters.
    #[arg(long, env = "CRIER_MAX_TEXT_CHARS", default_value_t = 4000)]
    pub max_text_chars: usize,

    /// Largest request body, in bytes.
    #[arg(long, env = "CRIER_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_author_chars: 64,
            max_text_chars: 4000,
            max_body_bytes: 64 * 1024,
        }
    }
}
