//! What chat-service records (names in [`server::metrics::names`]): messages
//! accepted and refused by source, POST and sync durations, and, read when
//! `/metrics` is scraped, the outbox depth, the broker connection and the
//! channels the store holds in memory, and the webhooks' deliveries and
//! backlog. `crier_broker_connected` has a
//! `connection` label: `publisher` (stored messages out) and `posts` (MQTT
//! posts in); broadcast-sse adds `subscriber`.

use std::sync::LazyLock;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use server::metrics::{Metrics, names, response};

use crate::AppState;

/// Where a message came from: REST (`http`) or an MQTT post (`mqtt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Http,
    Mqtt,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Http => "http",
            Source::Mqtt => "mqtt",
        }
    }
}

/// Describes the service's metrics and shows its counters from 0. Called at
/// start, after the recorder is installed and before the handles below are
/// first made (a handle made with no recorder records nowhere).
pub fn register() {
    describe_counter!(
        names::MESSAGES_ACCEPTED,
        "Messages stored, by source (http, mqtt)"
    );
    describe_counter!(
        names::MESSAGES_REJECTED,
        "Messages refused, by error code and source"
    );
    describe_gauge!(
        names::OUTBOX_DEPTH,
        "Stored messages the broker has not acknowledged"
    );
    describe_gauge!(
        names::BROKER_CONNECTED,
        "1 when the connection to the broker is up"
    );
    describe_histogram!(names::POST_DURATION, Unit::Seconds, "Time to answer a POST");
    describe_histogram!(
        names::STORE_QUEUE_WAIT,
        Unit::Seconds,
        "How long the oldest message of each write had waited for the store"
    );
    describe_histogram!(
        names::PUBLISH_DURATION,
        Unit::Seconds,
        "From a message handed to the broker client to the broker's acknowledgement (one in 64 sampled)"
    );
    describe_histogram!(
        names::STORE_COMMIT_DURATION,
        Unit::Seconds,
        "Time of one store sync"
    );
    describe_histogram!(
        names::PUBLISH_HOOK_DURATION,
        Unit::Seconds,
        "Time the publish hook took to give its verdict on a post (or to fail)"
    );
    describe_counter!(
        names::PUBLISH_HOOK_OUTCOMES,
        "Posts the publish hook was asked about, by outcome (accept, rewrite, reject, failed)"
    );
    describe_counter!(
        names::WEBHOOK_DELIVERIES,
        "Webhook events by outcome: delivered, failed (an attempt, tried again), skipped (removed by retention first), unreadable, dropped (a presence event pushed out of a full queue)"
    );
    describe_histogram!(
        names::WEBHOOK_DURATION,
        Unit::Seconds,
        "Time of one webhook POST, until the app answered or the attempt failed"
    );
    describe_gauge!(
        names::WEBHOOK_BACKLOG,
        "Log entries known but not yet delivered to the webhooks, and presence events queued for them, summed"
    );
    describe_counter!(
        names::SIGNALS_ACCEPTED,
        "Signals (typing, read markers) taken for the broker, by type"
    );
    describe_counter!(
        names::SIGNALS_DROPPED,
        "Signals not passed on, by reason (not_sent: taken but the broker connection had no room or was gone; invalid: not a signal, on a node's signals topic)"
    );
    describe_gauge!(
        names::STORE_CHANNELS,
        "Channels whose last id the store holds in memory"
    );
    for source in [Source::Http, Source::Mqtt] {
        accepted_counter(source).absolute(0);
    }
    for outcome in ["delivered", "failed", "dropped"] {
        webhook_outcome(outcome, 0);
    }
    signals_dropped().absolute(0);
}

fn accepted_counter(source: Source) -> &'static metrics::Counter {
    static HTTP: LazyLock<metrics::Counter> =
        LazyLock::new(|| counter!(names::MESSAGES_ACCEPTED, "source" => "http"));
    static MQTT: LazyLock<metrics::Counter> =
        LazyLock::new(|| counter!(names::MESSAGES_ACCEPTED, "source" => "mqtt"));
    match source {
        Source::Http => &HTTP,
        Source::Mqtt => &MQTT,
    }
}

/// `count` new messages were stored (a replay of an idempotency key is not).
pub fn accepted(source: Source, count: usize) {
    if count > 0 {
        accepted_counter(source).increment(count as u64);
    }
}

/// A message was refused with this error code.
pub fn rejected(source: Source, code: &str) {
    let code = code.to_string();
    counter!(names::MESSAGES_REJECTED, "code" => code, "source" => source.label()).increment(1);
}

/// How long a POST took to answer.
pub fn post_took(elapsed: Duration) {
    static POST_DURATION: LazyLock<metrics::Histogram> =
        LazyLock::new(|| histogram!(names::POST_DURATION));
    POST_DURATION.record(elapsed);
}

/// How long the publish hook took on one post.
pub fn publish_hook_took(elapsed: Duration) {
    static DURATION: LazyLock<metrics::Histogram> =
        LazyLock::new(|| histogram!(names::PUBLISH_HOOK_DURATION));
    DURATION.record(elapsed);
}

/// What the publish hook made of one post: `accept`, `rewrite`, `reject` or
/// `failed`.
pub fn publish_hook_outcome(outcome: &'static str) {
    counter!(names::PUBLISH_HOOK_OUTCOMES, "outcome" => outcome).increment(1);
}

/// How long one webhook POST took (or took to fail).
pub fn webhook_took(elapsed: Duration) {
    static DURATION: LazyLock<metrics::Histogram> =
        LazyLock::new(|| histogram!(names::WEBHOOK_DURATION));
    DURATION.record(elapsed);
}

/// `count` webhook events ended so: `delivered`, `failed` (one attempt),
/// `skipped`, `unreadable` or `dropped` (a presence event out of a full
/// queue).
pub fn webhook_outcome(outcome: &'static str, count: u64) {
    counter!(names::WEBHOOK_DELIVERIES, "outcome" => outcome).increment(count);
}

/// A signal of this type (`typing`, `read`) was taken for the broker.
pub fn signal_accepted(kind: &'static str) {
    counter!(names::SIGNALS_ACCEPTED, "type" => kind).increment(1);
}

/// The counter of signals taken for the broker but not handed to it.
pub fn signals_dropped() -> metrics::Counter {
    counter!(names::SIGNALS_DROPPED, "reason" => "not_sent")
}

/// Sets the gauges from the service's state, then renders everything.
pub fn render(state: &AppState) -> String {
    set_gauges(state);
    Metrics::install().render()
}

/// Sets the gauges read from the service's state.
pub fn set_gauges(state: &AppState) {
    gauge!(names::OUTBOX_DEPTH).set(state.publisher.outbox_depth() as f64);
    let publisher = state.publisher.status().is_connected();
    gauge!(names::BROKER_CONNECTED, "connection" => "publisher").set(flag(publisher));
    if let Some(posts) = &state.mqtt_posts {
        gauge!(names::BROKER_CONNECTED, "connection" => "posts").set(flag(posts.is_connected()));
    }
    let channels = match state.history.replicated() {
        Some(log) => log.channels_in_memory(),
        None => state.store.channels_in_memory(),
    };
    gauge!(names::STORE_CHANNELS).set(channels as f64);
    if let Some(webhooks) = &state.webhooks {
        gauge!(names::WEBHOOK_BACKLOG).set(webhooks.backlog() as f64);
    }
}

fn flag(on: bool) -> f64 {
    f64::from(u8::from(on))
}

/// `GET /metrics`.
pub async fn scrape(state: web::Data<AppState>) -> HttpResponse {
    response(render(&state))
}
