//! MQTT posts on NATS. nats-server's MQTT listener turns a post on
//! `{prefix}/channels/{channel}/post` into the subject
//! `{prefix}.channels.{channel}.post`, which a work-queue stream keeps (R3,
//! like history) until a chat-service has handled it:
//! - **Once.** Every chat-service pulls from one durable consumer, so each
//!   post goes to one of them; no `$share` subscription is needed.
//! - **Never lost.** A post waits in the stream while every chat-service is
//!   down, and is acknowledged only once it is stored (or refused). One
//!   that is delivered again after a crash is appended with the key
//!   `post-{sequence}` (or its own `key`), which the history's dedupe window
//!   recognises.
//! - **Checked like any post** (the publish hook included); a refusal is
//!   published on `{prefix}/errors`, as with the embedded broker.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use protocol::topic;
use server::mqtt::BrokerStatus;
use server::tasks::Background;

use super::{ConnectError, JetStreamLog, prepare_stream, subject_of_topic};
use crate::AppState;
use crate::error::ChatError;
use crate::intake::post::{ask_the_app, checked};
use crate::intake::{Rejection, refusal_body};
use crate::metrics::{self, Source};
use crate::store::{Entry, StoreError};

/// The consumer every chat-service pulls posts from.
const CONSUMER: &str = "crier-chat-services";
/// Posts handed to chat-services and not yet acknowledged, at most.
const MAX_ACK_PENDING: i64 = 256;
/// How long a post may stay unacknowledged before it is handed out again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How long a post that could not be stored now waits before it is tried
/// again.
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// How long to wait before pulling again after the consumer failed.
const PULL_PAUSE: Duration = Duration::from_secs(1);

impl JetStreamLog {
    /// Makes the stream of MQTT posts (if missing) and the consumer every
    /// chat-service shares.
    pub async fn posts(&self, topic_prefix: &str) -> Result<PullConsumer, ConnectError> {
        let name = format!("{}_POSTS", self.inner.subjects.stream);
        let config = stream::Config {
            name: name.clone(),
            description: Some("Crier: MQTT posts waiting for a chat-service".to_string()),
            subjects: vec![format!(
                "{}.channels.*.post",
                subject_of_topic(topic_prefix)
            )],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: self.inner.replicas,
            ..Default::default()
        };
        let stream = prepare_stream(&self.inner.context, config).await?;
        stream
            .get_or_create_consumer(
                CONSUMER,
                pull::Config {
                    durable_name: Some(CONSUMER.to_string()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: MAX_ACK_PENDING,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| ConnectError::Stream(name, e.to_string()))
    }
}

/// Where MQTT posts are taken from, and where `/readyz` learns whether
/// they are.
pub struct Taking {
    pub consumer: PullConsumer,
    pub prefix: String,
    pub status: BrokerStatus,
}

/// Takes MQTT posts until the service stops.
pub fn take(state: AppState, taking: Taking, background: &Background) {
    let stop = background.stopping();
    background.spawn(async move {
        tokio::select! {
            () = stop.cancelled() => {}
            () = pull_forever(&state, &taking) => {}
        }
    });
}

async fn pull_forever(state: &AppState, taking: &Taking) {
    loop {
        match taking.consumer.messages().await {
            Ok(mut posts) => {
                log::info!("MQTT posts: taking posts from the JetStream work queue");
                taking.status.set(true);
                while let Some(post) = posts.next().await {
                    match post {
                        Ok(post) => handle(state, &taking.prefix, post).await,
                        Err(e) => {
                            log::warn!("MQTT posts: pulling failed: {e}");
                            break;
                        }
                    }
                }
            }
            Err(e) => log::warn!("MQTT posts: cannot pull posts: {e}"),
        }
        taking.status.set(false);
        tokio::time::sleep(PULL_PAUSE).await;
    }
}

/// Stores or refuses one post, then acknowledges it; a post that cannot be
/// stored now is handed out again later.
async fn handle(state: &AppState, prefix: &str, post: jetstream::Message) {
    let topic = post.subject.replace('.', "/");
    let sequence = post.info().map(|info| info.stream_sequence).unwrap_or(0);
    let outcome = match entry_of(state, prefix, &topic, &post.payload, sequence).await {
        Ok(entry) => state
            .history
            .append_one(entry, state.ack)
            .await
            .map_err(ChatError::Store),
        Err(refusal) => Err(refusal),
    };
    let ack = match outcome {
        Ok(appended) => {
            metrics::accepted(Source::Mqtt, usize::from(appended.created));
            AckKind::Ack
        }
        Err(ChatError::Store(StoreError::Busy | StoreError::Unavailable(_))) => {
            AckKind::Nak(Some(RETRY_DELAY))
        }
        Err(refusal) => {
            report(state, prefix, &topic, &post.payload, &refusal).await;
            AckKind::Ack
        }
    };
    if let Err(e) = post.ack_with(ack).await {
        log::warn!("MQTT posts: cannot acknowledge {topic}: {e}");
    }
}

async fn entry_of(
    state: &AppState,
    prefix: &str,
    topic: &str,
    payload: &[u8],
    sequence: u64,
) -> Result<Entry, ChatError> {
    let (entry, key) = checked(state, prefix, topic, payload)?;
    let key = key.unwrap_or_else(|| format!("post-{sequence}"));
    ask_the_app(state, entry.with_key(Some(key))).await
}

/// Counts a refusal and publishes it on `{prefix}/errors`.
async fn report(state: &AppState, prefix: &str, topic: &str, payload: &[u8], refusal: &ChatError) {
    let body = refusal_body(topic, refusal);
    metrics::rejected(Source::Mqtt, &body.error.code);
    let Some(log) = state.history.replicated() else {
        return;
    };
    let Some(json) = Rejection::json(body, topic, payload) else {
        return;
    };
    let errors = subject_of_topic(&topic::errors_topic(prefix));
    if let Err(e) = log.inner.client.publish(errors, json.into()).await {
        log::warn!("MQTT posts: cannot report a refusal: {e}");
    }
}
