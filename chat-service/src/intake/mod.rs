//! Posts from MQTT clients: chat-service subscribes to
//! `{prefix}/channels/+/post` and stores each post exactly as it stores a REST
//! one, so the stored message goes out on `…/messages` like any other.
//!
//! - **Once.** The subscription is shared (`$share/{group}/…`), so when several
//!   chat-services subscribe each post is taken by one of them. The session is
//!   persistent (a client id kept with the data directory), and a post is
//!   acknowledged to the broker only once it is stored (synced, with durable
//!   acknowledgements), so a chat-service that stops before acknowledging gets
//!   the post again when it comes back; a key derived from the delivery
//!   ([`post`]) keeps that redelivery from being stored twice.
//! - **In order.** Posts are queued to the store in the order they arrive, and
//!   acknowledged in that order.
//! - **Bounded.** At most [`MAX_PENDING`] posts wait for the store at once; past
//!   that the connection is not read, and the broker holds the rest.
//! - **Sharded**, a chat-service started with `--mqtt-post-forward` relays each
//!   post to the front, which routes it to the shard that owns the channel
//!   ([`forward`]), with the same key: the owner numbers and stores it.
//! - **Counted** like REST posts, with `source="mqtt"`: stored posts in
//!   `crier_messages_accepted_total` (a relayed post is counted by the shard
//!   that stores it, as `http`), refusals in `crier_messages_rejected_total`.
//! - **Checked by the app**, when a publish hook is configured, like REST posts
//!   (with no claims: MQTT posts carry no token), one post at a time before it
//!   is queued to the store; a relayed post is checked by the shard that stores
//!   it. A rejection is a refusal like any other.
//! - **Refusals** are not stored: the JSON error body, with the post's topic and
//!   key, is published on `{prefix}/errors` (brokers do not tell a subscriber
//!   who published a message, so there is no per-client topic to use).

mod forward;
pub(crate) mod post;
mod subscription;

use std::time::Duration;

use actix_web::http::StatusCode;
use protocol::error::ErrorBody;
use protocol::topic;
use rumqttc::{AsyncClient, Publish, QoS, SubscribeFilter};
use serde::Serialize;
use server::error::ApiError;
use server::mqtt::connection::{
    self, Capacity, ConnectionId, Driven, Driver, Requests, Sent, Session,
};
use server::mqtt::{BrokerStatus, BrokerUrl};
use server::tasks::Background;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::AppState;
use crate::error::ChatError;
use crate::metrics::{self, Source};
use crate::store::{Entry, Pending, StoreError};

pub use forward::Forwarder;
use forward::Refused;
use subscription::{Step, Subscription};

/// Posts taken from the broker and not yet acknowledged, at most.
pub const MAX_PENDING: usize = 256;
/// rumqttc's request queue (acknowledgements and error reports: larger than
/// twice [`MAX_PENDING`], so the acknowledging task never waits on the poll
/// loop while the poll loop waits on it), and broker events waiting.
const CAPACITY: Capacity = Capacity {
    requests: 4 * MAX_PENDING,
    events: 64,
};
/// How long to wait before offering a post to a full ingest queue again.
const BUSY_DELAY: Duration = Duration::from_millis(5);

/// Where and how to take posts.
pub struct IntakeSettings {
    pub broker: BrokerUrl,
    pub prefix: String,
    /// Shared subscription group; empty for a plain subscription.
    pub group: String,
    /// Relay posts to the shard that owns their channel instead of storing them.
    pub forward: Option<Forwarder>,
}

impl IntakeSettings {
    /// `$share/{group}/{prefix}/channels/+/post`, or the plain filter.
    fn filter(&self) -> String {
        let posts = topic::all_posts_filter(&self.prefix);
        if self.group.is_empty() {
            posts
        } else {
            format!("$share/{}/{posts}", self.group)
        }
    }
}

/// Starts taking posts; `status` tells whether the subscription is in place.
pub fn start(
    state: AppState,
    settings: IntakeSettings,
    status: BrokerStatus,
    background: &Background,
) -> JoinHandle<()> {
    let client_id = format!("crier-chat-posts-{}", state.store.node_id().simple());
    let mut options = settings.broker.options(&client_id);
    options.set_manual_acks(true);
    let driver = connection::open(options, Session::Persistent, CAPACITY);
    // Acknowledgements and refusals go out on whichever connection is up: the
    // broker sends again, on the kept session, what was not acknowledged.
    let client = driver.requests.ungated();
    let (pending, taken) = mpsc::channel(MAX_PENDING);
    let errors = topic::errors_topic(&settings.prefix);
    let filter = settings.filter();
    let relaying = settings.forward.is_some();
    background.spawn(acknowledge(client.clone(), taken, errors, settings.forward));
    let intake = Intake {
        state,
        relaying,
        requests: driver.requests.clone(),
        filter,
        prefix: settings.prefix,
        status,
        pending,
        subscription: Subscription::default(),
    };
    background.spawn(intake.run(driver))
}

struct Intake {
    state: AppState,
    /// Posts are relayed rather than stored here.
    relaying: bool,
    requests: Requests,
    filter: String,
    prefix: String,
    status: BrokerStatus,
    pending: mpsc::Sender<Taken>,
    subscription: Subscription,
}

/// A post taken from the broker, waiting for its acknowledgement.
struct Taken {
    publish: Publish,
    outcome: Outcome,
}

enum Outcome {
    Queued(Pending),
    Relay(Entry),
    Refused(ChatError),
}

impl Intake {
    async fn run(mut self, mut driver: Driver) {
        while let Some(driven) = driver.events.recv().await {
            if !self.handle(driven).await {
                return;
            }
        }
    }

    /// Handles one event; `false` once the acknowledging task is gone.
    async fn handle(&mut self, driven: Driven) -> bool {
        let step = match driven {
            Driven::Connected {
                id,
                session_present,
            } => {
                let step = self.subscription.connected(session_present);
                if step == Step::Subscribe {
                    self.subscribe(id);
                }
                step
            }
            Driven::Sent(Sent::Subscribe(pkid)) => {
                self.subscription.written(pkid);
                Step::Nothing
            }
            Driven::SubAck(ack) => self.subscription.acknowledged(&ack),
            Driven::Lost(e) => {
                let step = self.subscription.lost();
                if step == (Step::Stopped { was_taking: true }) {
                    log::warn!("MQTT posts: connection lost: {e}");
                }
                step
            }
            Driven::Publish(publish) => {
                let taken = self.take(publish).await;
                return self.pending.send(taken).await.is_ok();
            }
            Driven::Sent(_) | Driven::PubAck(_) => Step::Nothing,
        };
        self.report(step);
        true
    }

    fn subscribe(&mut self, id: ConnectionId) {
        let filter = SubscribeFilter::new(self.filter.clone(), QoS::AtLeastOnce);
        if let Err(e) = self.requests.subscribe(id, [filter]) {
            log::error!("MQTT posts: cannot subscribe: {e}");
            self.subscription.not_sent();
        }
    }

    fn report(&self, step: Step) {
        match step {
            Step::Taking => {
                if !self.status.is_connected() {
                    log::info!("MQTT posts: taking posts from {}", self.filter);
                }
                self.status.set(true);
            }
            Step::Refused => {
                log::error!(
                    "MQTT posts: the broker refused the subscription to {}",
                    self.filter
                );
                self.status.set(false);
            }
            Step::Stopped { .. } => self.status.set(false),
            Step::Subscribe | Step::Nothing => {}
        }
    }

    /// Checks a post (asking the publish hook, if any) and queues it to the
    /// store (waiting while the store's ingest queue is full, which stops
    /// reading from the broker meanwhile).
    async fn take(&self, publish: Publish) -> Taken {
        let checked = match post::entry(&self.state, &self.prefix, &publish) {
            Ok(entry) if self.relaying => Ok(entry),
            Ok(entry) => post::ask_the_app(&self.state, entry).await,
            Err(refusal) => Err(refusal),
        };
        let entry = match checked {
            Ok(entry) => entry,
            Err(refusal) => {
                return Taken {
                    publish,
                    outcome: Outcome::Refused(refusal),
                };
            }
        };
        if self.relaying {
            return Taken {
                publish,
                outcome: Outcome::Relay(entry),
            };
        }
        let outcome = loop {
            match self.state.store.submit(vec![entry.clone()], self.state.ack) {
                Ok(pending) => break Outcome::Queued(pending),
                Err(StoreError::Busy) => tokio::time::sleep(BUSY_DELAY).await,
                Err(e) => break Outcome::Refused(ChatError::Store(e)),
            }
        };
        Taken { publish, outcome }
    }
}

/// Acknowledges posts in the order they were taken, once each is stored (or
/// relayed) or refused, and reports refusals.
async fn acknowledge(
    client: AsyncClient,
    mut taken: mpsc::Receiver<Taken>,
    errors: String,
    forward: Option<Forwarder>,
) {
    while let Some(Taken { publish, outcome }) = taken.recv().await {
        let refusal = match outcome {
            Outcome::Queued(pending) => match pending.outcome().await {
                Ok(appended) => {
                    log_replays(&publish, &appended);
                    let created = appended.iter().filter(|a| a.created).count();
                    metrics::accepted(Source::Mqtt, created);
                    None
                }
                Err(e) => Some(refusal_of(&publish, &ChatError::Store(e))),
            },
            Outcome::Relay(entry) => relay(forward.as_ref(), &publish, &entry).await,
            Outcome::Refused(refusal) => Some(refusal_of(&publish, &refusal)),
        };
        if let Some(refusal) = refusal {
            metrics::rejected(Source::Mqtt, &refusal.error.code);
            report(&client, &errors, &publish, refusal).await;
        }
        if publish.qos != QoS::AtMostOnce && client.ack(&publish).await.is_err() {
            return;
        }
    }
}

/// Relays a post to its channel's owner; the error body when it is refused.
async fn relay(forward: Option<&Forwarder>, publish: &Publish, entry: &Entry) -> Option<ErrorBody> {
    let forward = forward?;
    match forward.forward(entry).await {
        Ok(()) => None,
        Err(Refused::ByOwner(body)) => Some(body),
        Err(Refused::Unreachable(why)) => {
            log::error!("MQTT posts: {} not relayed: {why}", publish.topic);
            let error = ApiError::new(
                StatusCode::BAD_GATEWAY,
                "relay_failed",
                "the chat-service that owns the channel could not be reached; post again",
            );
            Some(error.body())
        }
    }
}

/// The error body of a refusal of ours (logged when it is our failure).
fn refusal_of(publish: &Publish, refusal: &ChatError) -> ErrorBody {
    refusal_body(&publish.topic, refusal)
}

/// The error body of a refusal of a post on `topic` (logged when it is our
/// failure).
pub(crate) fn refusal_body(topic: &str, refusal: &ChatError) -> ErrorBody {
    if refusal.is_internal() {
        log::error!("MQTT posts: {topic} not stored: {refusal}");
    }
    refusal.to_api_error().body()
}

fn log_replays(publish: &Publish, appended: &[crate::store::Appended]) {
    for replayed in appended.iter().filter(|appended| !appended.created) {
        log::info!(
            "MQTT posts: {} (packet {}, redelivered: {}) is already stored as id {}; not stored again",
            publish.topic,
            publish.pkid,
            publish.dup,
            replayed.message.id
        );
    }
}

/// What `{prefix}/errors` carries: our error body, plus the post's topic and key.
#[derive(Serialize)]
pub(crate) struct Rejection<'a> {
    #[serde(flatten)]
    body: ErrorBody,
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

async fn report(client: &AsyncClient, errors: &str, publish: &Publish, body: ErrorBody) {
    let Some(json) = Rejection::json(body, &publish.topic, &publish.payload) else {
        return;
    };
    if let Err(e) = client.publish(errors, QoS::AtLeastOnce, false, json).await {
        log::warn!("MQTT posts: cannot report a refusal: {e}");
    }
}

impl Rejection<'_> {
    /// The report of a refused post on `topic`.
    pub(crate) fn json(body: ErrorBody, topic: &str, payload: &[u8]) -> Option<Vec<u8>> {
        let rejection = Rejection {
            body,
            topic,
            key: post_key(payload),
        };
        serde_json::to_vec(&rejection).ok()
    }
}

/// The post's `key`, when it has a string one, so a client can match a refusal.
fn post_key(payload: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    value.get("key")?.as_str().map(str::to_string)
}
