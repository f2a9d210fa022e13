//! Prometheus metrics: one recorder per process (the all-in-one's two services
//! record into the same one, so its `/metrics` is their union), rendered in
//! Prometheus' text format by `metrics-exporter-prometheus` at `GET /metrics`.
//!
//! Counters and histograms are recorded where things happen; gauges that
//! describe state (open streams, outbox depth, broker connection) are set from
//! that state when `/metrics` is read, so they cost nothing in between.

use std::net::{SocketAddr, TcpListener};
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// The metric names, shared by the code that records and the tests that read.
pub mod names {
    pub const MESSAGES_ACCEPTED: &str = "crier_messages_accepted_total";
    pub const MESSAGES_REJECTED: &str = "crier_messages_rejected_total";
    pub const OUTBOX_DEPTH: &str = "crier_outbox_depth";
    pub const BROKER_CONNECTED: &str = "crier_broker_connected";
    pub const POST_DURATION: &str = "crier_post_duration_seconds";
    pub const STORE_COMMIT_DURATION: &str = "crier_store_commit_duration_seconds";
    pub const STORE_CHANNELS: &str = "crier_store_channels";
    pub const SSE_CONNECTIONS: &str = "crier_sse_connections";
    pub const SSE_EVENTS_SENT: &str = "crier_sse_events_sent_total";
    pub const CHANNELS_ACTIVE: &str = "crier_channels_active";
    pub const REPLAYED_EVENTS: &str = "crier_replayed_events_total";
    pub const BACKFILLS: &str = "crier_backfills_total";
    pub const HISTORY_READS_SHARED: &str = "crier_history_reads_shared_total";
    pub const SLOW_CLIENTS: &str = "crier_slow_clients_total";
    pub const DELIVERY_LAG: &str = "crier_delivery_lag_seconds";
    pub const STORE_QUEUE_WAIT: &str = "crier_store_queue_seconds";
    pub const FANOUT_DURATION: &str = "crier_fanout_seconds";
    pub const PUBLISH_DURATION: &str = "crier_publish_seconds";
    pub const BUS_LAG: &str = "crier_bus_lag_seconds";
    pub const PUBLISH_HOOK_DURATION: &str = "crier_publish_hook_seconds";
    pub const PUBLISH_HOOK_OUTCOMES: &str = "crier_publish_hook_total";
    pub const WEBHOOK_DELIVERIES: &str = "crier_webhook_deliveries_total";
    pub const WEBHOOK_DURATION: &str = "crier_webhook_seconds";
    pub const WEBHOOK_BACKLOG: &str = "crier_webhook_backlog";
    pub const SIGNALS_ACCEPTED: &str = "crier_signals_accepted_total";
    pub const SIGNALS_DROPPED: &str = "crier_signals_dropped_total";
    pub const SIGNALS_DELIVERED: &str = "crier_signals_delivered_total";
}

/// Histogram buckets, in seconds: POSTs and syncs take from tens of
/// microseconds to a second; delivery from a millisecond to many seconds.
const FAST_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];
const DELIVERY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Histograms keep their samples until the next upkeep folds them in.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// The process's recorder, to render.
#[derive(Clone)]
pub struct Metrics(PrometheusHandle);

impl Metrics {
    /// Installs the process's recorder on first use and returns it after: the
    /// all-in-one's two services get the same one.
    pub fn install() -> Metrics {
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        METRICS.get_or_init(build).clone()
    }

    /// Everything recorded, in Prometheus' text format.
    pub fn render(&self) -> String {
        self.0.render()
    }
}

fn build() -> Metrics {
    let builder = with_buckets().unwrap_or_else(|e| {
        log::warn!("histogram buckets refused ({e}): histograms are summaries");
        PrometheusBuilder::new()
    });
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        log::warn!("another metrics recorder is installed: /metrics stays empty");
    }
    let upkeep = handle.clone();
    let started = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
    if let Err(e) = started {
        log::warn!("cannot start the metrics upkeep thread: {e}");
    }
    Metrics(handle)
}

fn with_buckets() -> Result<PrometheusBuilder, BuildError> {
    let buckets = [
        (names::POST_DURATION, FAST_BUCKETS),
        (names::STORE_COMMIT_DURATION, FAST_BUCKETS),
        (names::DELIVERY_LAG, DELIVERY_BUCKETS),
        (names::STORE_QUEUE_WAIT, FAST_BUCKETS),
        (names::FANOUT_DURATION, FAST_BUCKETS),
        (names::PUBLISH_DURATION, FAST_BUCKETS),
        (names::PUBLISH_HOOK_DURATION, FAST_BUCKETS),
        (names::WEBHOOK_DURATION, FAST_BUCKETS),
        (names::BUS_LAG, DELIVERY_BUCKETS),
    ];
    buckets
        .into_iter()
        .try_fold(PrometheusBuilder::new(), |builder, (name, buckets)| {
            builder.set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)
        })
}

/// The answer to `GET /metrics`.
pub fn response(text: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}

/// Serves only `/metrics` on `address` (`--metrics-listen`) for one service:
/// `configure` registers the route, which reads `state`.
pub fn serve_alone_with<S: Send + Sync + 'static>(
    address: &str,
    state: S,
    configure: fn(&mut web::ServiceConfig),
) -> std::io::Result<SocketAddr> {
    let state = web::Data::new(state);
    serve_alone(address, move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(state.clone());
        configure(cfg);
    })
}

/// Serves only `/metrics` on `address` (`--metrics-listen`), with `configure`
/// registering the route and whatever it reads; returns the bound address.
/// Must be called on the server's runtime, which runs it from then on.
pub fn serve_alone<F>(address: &str, configure: F) -> std::io::Result<SocketAddr>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let listener = TcpListener::bind(address)?;
    let bound = listener.local_addr()?;
    let server: Server = HttpServer::new(move || App::new().configure(configure.clone()))
        .workers(1)
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
    actix_web::rt::spawn(server);
    log::info!("metrics on http://{bound}/metrics");
    Ok(bound)
}
