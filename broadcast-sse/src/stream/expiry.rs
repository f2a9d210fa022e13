//! A stream ends with `event: reconnect` when the client's token expires, so
//! it reconnects with a fresh one.

use std::pin::Pin;
use std::time::Duration;

use super::ClientStream;
use super::events::reconnect_event;

impl ClientStream {
    /// Ends the stream, with `event: reconnect`, when the client's token expires
    /// (`exp`, seconds since the Unix epoch): it reconnects with a fresh token.
    pub fn expiring_at(mut self, exp: u64) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let left = Duration::from_secs(exp).saturating_sub(now);
        self.expiry = Some(Box::pin(tokio::time::sleep(left)));
        self
    }

    pub(super) fn end_if_expired(&mut self) {
        if self
            .expiry
            .as_ref()
            .is_some_and(|expiry| expiry.deadline() <= tokio::time::Instant::now())
        {
            self.expire();
        }
    }

    pub(super) fn expire(&mut self) {
        self.ended = true;
        self.push(reconnect_event("the token has expired"));
    }
}

/// Waits until the token expires, or forever without one.
pub(super) async fn token_expired(expiry: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match expiry {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}
