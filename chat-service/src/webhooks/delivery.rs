//! One POST of a batch of events (a JSON array, one channel's next events in
//! order), signed, and the pause between failed attempts.
//!
//! A `2xx` answer is a delivery; any other status, a redirect (not followed:
//! the POST would come back as a GET), no answer within `--webhook-timeout`
//! or a connection error is a failure, tried again after a pause that doubles
//! up to `--webhook-max-backoff`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::endpoint::Endpoint;
use super::event::Event;
use super::signature;
use crate::error::with_causes;
use crate::metrics;

/// The first pause after a failure.
const FIRST_PAUSE: Duration = Duration::from_millis(250);

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("no answer: {0}")]
    Unreachable(String),
    #[error("answered {0}, not 2xx")]
    Status(u16),
}

/// Sends events: one HTTP client for every webhook, and the shared secret.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    secret: std::sync::Arc<[u8]>,
}

impl Sender {
    pub fn new(secret: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        server::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("crier-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            client,
            secret: secret.as_bytes().into(),
        })
    }

    /// POSTs `events` to `endpoint` once, as one JSON array, signed at the
    /// current time.
    pub async fn send(&self, endpoint: &Endpoint, events: &[Event]) -> Result<(), DeliveryError> {
        let body = batch_body(events);
        let signature = signature::sign(&self.secret, unix_now(), &body);
        // Without the URL: it may carry credentials, and the log names it at start.
        let response = self
            .client
            .post(endpoint.url().clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| DeliveryError::Unreachable(with_causes(&e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Status(status.as_u16()))
        }
    }
}

/// Sends `event` until `endpoint` acknowledges it, pausing longer after each
/// failure (up to `max_backoff`); timed and counted. Ends only when the app
/// acknowledged, or when its task is dropped (the service stops). `id` names
/// the event in the log.
pub async fn until_acknowledged(
    sender: &Sender,
    endpoint: &Endpoint,
    events: &[Event],
    max_backoff: Duration,
    id: &(dyn std::fmt::Display + Sync),
) {
    let mut backoff = Backoff::new(max_backoff);
    let mut failures = 0u64;
    loop {
        let started = Instant::now();
        let sent = sender.send(endpoint, events).await;
        metrics::webhook_took(started.elapsed());
        match sent {
            Ok(()) => {
                metrics::webhook_outcome("delivered", events.len() as u64);
                if failures > 0 {
                    log::info!("webhook {}: delivered again", endpoint.shown());
                }
                return;
            }
            Err(e) => {
                metrics::webhook_outcome("failed", events.len() as u64);
                let pause = backoff.pause();
                if failures == 0 {
                    log::warn!("webhook {}: {id} failed ({e}); retrying", endpoint.shown());
                } else {
                    log::debug!("webhook {}: {id} failed again ({e})", endpoint.shown());
                }
                failures += 1;
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// The pause before the next attempt: doubles from [`FIRST_PAUSE`] up to a cap.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(cap: Duration) -> Self {
        Backoff {
            next: FIRST_PAUSE.min(cap),
            cap,
        }
    }

    /// The pause to take now; the next one is twice as long, at most the cap.
    pub fn pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.cap);
        pause
    }
}

/// `[event,event,…]`: the events' bodies, as they are, in one JSON array.
fn batch_body(events: &[Event]) -> Vec<u8> {
    let length = events
        .iter()
        .map(|event| event.body.len() + 1)
        .sum::<usize>();
    let mut body = Vec::with_capacity(length + 2);
    body.push(b'[');
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&event.body);
    }
    body.push(b']');
    body
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_one_json_array_of_the_events_in_order() {
        let event = |body: &str| Event {
            event_type: super::super::event::EventType::MessageCreated,
            body: body.as_bytes().to_vec(),
        };
        let body = batch_body(&[event(r#"{"id":"a"}"#), event(r#"{"id":"b"}"#)]);
        let parsed: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(parsed, serde_json::json!([{"id": "a"}, {"id": "b"}]));
        assert_eq!(batch_body(&[event("{}")]), b"[{}]");
    }

    #[test]
    fn the_pause_doubles_up_to_the_cap() {
        let mut backoff = Backoff::new(Duration::from_secs(1));
        let pauses: Vec<u128> = (0..5).map(|_| backoff.pause().as_millis()).collect();
        assert_eq!(pauses, [250, 500, 1000, 1000, 1000]);
        let mut short = Backoff::new(Duration::from_millis(100));
        assert_eq!(short.pause(), Duration::from_millis(100));
    }
}
