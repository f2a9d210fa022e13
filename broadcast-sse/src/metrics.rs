//! What broadcast-sse records (names in [`protocol::metrics::names`]).
//!
//! The per-stream counters are kept as handles made once, so a write to a
//! client costs two atomic additions and one histogram sample, whatever the
//! number of messages in it. Open streams, followed channels and the broker
//! connection are read from the hub when `/metrics` is scraped.

use std::sync::LazyLock;

use actix_web::{HttpResponse, web};
use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use protocol::metrics::{Metrics, names, response};

use crate::AppState;

/// Handles of what streams record.
pub struct StreamMetrics {
    /// Message events written to clients (not heartbeats or control events).
    pub events_sent: Counter,
    /// Message events a stream sent while catching up (resume, lag, gap).
    pub replayed: Counter,
    /// Streams that fell behind the live ring and had to catch up.
    pub slow_clients: Counter,
    /// From a message's stored time to its write to a client: one sample per
    /// write, at the oldest live message in it.
    pub delivery_lag: Histogram,
}

/// Made on first use, which comes after the recorder is installed (at start).
pub static STREAMS: LazyLock<StreamMetrics> = LazyLock::new(|| StreamMetrics {
    events_sent: counter!(names::SSE_EVENTS_SENT),
    replayed: counter!(names::REPLAYED_EVENTS),
    slow_clients: counter!(names::SLOW_CLIENTS),
    delivery_lag: histogram!(names::DELIVERY_LAG),
});

/// Describes the service's metrics and shows its counters from 0.
pub fn register() {
    describe_gauge!(names::SSE_CONNECTIONS, "Open event streams");
    describe_counter!(names::SSE_EVENTS_SENT, "Message events written to clients");
    describe_gauge!(names::CHANNELS_ACTIVE, "Channels this node follows");
    describe_gauge!(
        names::BROKER_CONNECTED,
        "1 when the connection to the broker is up"
    );
    describe_counter!(
        names::REPLAYED_EVENTS,
        "Message events sent while catching a stream up"
    );
    describe_counter!(names::BACKFILLS, "Backfills of a channel from history");
    describe_counter!(
        names::SLOW_CLIENTS,
        "Times a stream fell behind the live ring"
    );
    describe_histogram!(
        names::DELIVERY_LAG,
        Unit::Seconds,
        "From a message's store to its write to a client (one sample per write)"
    );
    LazyLock::force(&STREAMS);
    counter!(names::BACKFILLS).absolute(0);
}

/// A backfill of a channel from history started.
pub fn backfill_started() {
    counter!(names::BACKFILLS).increment(1);
}

/// Sets the gauges from the service's state, then renders everything.
pub fn render(state: &AppState) -> String {
    set_gauges(state);
    Metrics::install().render()
}

/// Sets the gauges read from the service's state.
pub fn set_gauges(state: &AppState) {
    gauge!(names::SSE_CONNECTIONS).set(state.hub.listener_count() as f64);
    gauge!(names::CHANNELS_ACTIVE).set(state.hub.channel_count() as f64);
    let connected = f64::from(u8::from(state.broker.is_connected()));
    gauge!(names::BROKER_CONNECTED, "connection" => "subscriber").set(connected);
}

/// `GET /metrics`.
pub async fn scrape(state: web::Data<AppState>) -> HttpResponse {
    response(render(&state))
}

/// Registers `GET /metrics` (the caller provides `web::Data<AppState>`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(scrape));
}
