//! Relays MQTT posts to the chat-service that owns their channel, for a sharded
//! deployment: `POST {base}/channels/{c}/messages` through the front that routes
//! each channel to its shard, with the post's idempotency key, so the owner
//! numbers and stores it and a retried or redelivered relay is stored once.

use std::time::Duration;

use protocol::error::ErrorBody;
use reqwest::StatusCode;
use serde::Serialize;

use crate::routes::messages::KEY_IS_NEW;
use crate::store::Entry;

/// Attempts at most for one post while the owner is unreachable or busy;
/// between them the wait doubles from [`FIRST_RETRY`] (about 6 s in all).
const ATTEMPTS: u32 = 7;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where posts are relayed, and as whom.
pub struct Forwarder {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// Why a relayed post was not stored.
pub enum Refused {
    /// The owner refused it: its error body, to pass on as it is.
    ByOwner(ErrorBody),
    /// The owner could not be reached, or kept failing.
    Unreachable(String),
}

#[derive(Serialize)]
struct Body<'a> {
    author: &'a str,
    text: &'a str,
}

impl Forwarder {
    pub fn new(base: &str, token: Option<String>) -> Result<Self, reqwest::Error> {
        server::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Forwarder {
            client,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// Relays one post, retrying while the owner is unreachable or answers
    /// `5xx`; `Ok` once it is stored (or was already).
    pub async fn forward(&self, entry: &Entry) -> Result<(), Refused> {
        let mut wait = FIRST_RETRY;
        let mut last_failure = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.attempt(entry).await {
                Ok(()) => return Ok(()),
                Err(Attempt::Refused(body)) => return Err(Refused::ByOwner(body)),
                Err(Attempt::Failed(why)) => last_failure = why,
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        Err(Refused::Unreachable(last_failure))
    }

    async fn attempt(&self, entry: &Entry) -> Result<(), Attempt> {
        let url = format!("{}/channels/{}/messages", self.base, entry.channel);
        let body = Body {
            author: entry.message.author.as_str(),
            text: entry.message.text.as_str(),
        };
        let mut request = self.client.post(url).json(&body);
        if let Some(key) = &entry.idempotency_key {
            request = request.header("Idempotency-Key", key);
            request = request.header(KEY_IS_NEW, if entry.key_is_new { "true" } else { "false" });
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Attempt::Failed(format!("relay to {} failed: {e}", self.base)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let failed = format!("{} answered {status}", self.base);
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Attempt::Failed(failed));
        }
        match response.json::<ErrorBody>().await {
            Ok(body) => Err(Attempt::Refused(body)),
            Err(_) => Err(Attempt::Failed(failed)),
        }
    }
}

enum Attempt {
    Refused(ErrorBody),
    Failed(String),
}
