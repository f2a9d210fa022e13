//! How broadcast-sse proves to the chat-service that it may read history.

use jsonwebtoken::{Algorithm, EncodingKey};

/// How a service authenticates its history reads.
pub enum HistoryCredentials {
    None,
    Fixed(String),
    /// Short-lived tokens that may read every channel, signed with the secret.
    Minted(EncodingKey),
}

/// Lifetime of a minted history token.
const MINTED_TOKEN_SECS: u64 = 300;

impl HistoryCredentials {
    /// The bearer token for the next request, if any.
    pub fn token(&self) -> Option<String> {
        match self {
            HistoryCredentials::None => None,
            HistoryCredentials::Fixed(token) => Some(token.clone()),
            HistoryCredentials::Minted(key) => {
                let claims = serde_json::json!({
                    "name": "broadcast-sse",
                    "subscribe": "*",
                    "exp": jsonwebtoken::get_current_timestamp() + MINTED_TOKEN_SECS,
                });
                let header = jsonwebtoken::Header::new(Algorithm::HS256);
                jsonwebtoken::encode(&header, &claims, key)
                    .map_err(|e| log::error!("cannot sign a history token: {e}"))
                    .ok()
            }
        }
    }
}
