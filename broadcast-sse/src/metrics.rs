//! What broadcast-sse records (names in [`server::metrics::names`]).
//!
//! A write to a client must cost next to nothing: the events it carries are
//! added to a counter of the writing thread's own (summed when `/metrics` is
//! scraped, so the total is exact and no cache line is shared between
//! threads), and one write in [`LAG_SAMPLE_EVERY`] per thread gives a
//! delivery-lag sample (the exporter keeps each sample until its upkeep, and a
//! fan-out writes millions of times a second). Rare events (replays, slow
//! clients, backfills) go straight to their counters. Open streams, followed
//! channels and the broker connection are read from the hub when scraped.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use actix_web::{HttpResponse, web};
use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use server::metrics::{Metrics, names, response};

use crate::AppState;

/// One delivery-lag sample per this many writes of a thread (the first one
/// included).
pub const LAG_SAMPLE_EVERY: u32 = 64;

/// Handles of what streams record.
pub struct StreamMetrics {
    /// Message events a stream sent while catching up (resume, lag, gap).
    pub replayed: Counter,
    /// Streams that fell behind the live ring and had to catch up.
    pub slow_clients: Counter,
    /// From a message's stored time to its write to a client: sampled writes,
    /// at the first live message in each.
    pub delivery_lag: Histogram,
    /// From this node receiving a message to its write to a client, on the
    /// same samples.
    pub fanout: Histogram,
    /// From a message's stored time to its arrival on this node: one
    /// message in [`LAG_SAMPLE_EVERY`] taken from the broker.
    pub bus_lag: Histogram,
}

/// Every thread's count of message events written, summed when scraped.
static EVENTS_BY_THREAD: Mutex<Vec<Arc<AtomicU64>>> = Mutex::new(Vec::new());

thread_local! {
    static EVENTS_SENT: Arc<AtomicU64> = {
        let counter = Arc::new(AtomicU64::new(0));
        EVENTS_BY_THREAD
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(counter.clone());
        counter
    };
    static WRITES: Cell<u32> = const { Cell::new(0) };
}

/// Event streams open in this process (a stream of several channels is one).
static OPEN_STREAMS: AtomicU64 = AtomicU64::new(0);

/// Counts a stream while the returned guard lives.
pub fn stream_opened() -> OpenStream {
    OPEN_STREAMS.fetch_add(1, Ordering::Relaxed);
    OpenStream(())
}

/// One open stream in [`open_streams`]; dropped with its stream.
pub struct OpenStream(());

impl Drop for OpenStream {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

pub fn open_streams() -> u64 {
    OPEN_STREAMS.load(Ordering::Relaxed)
}

/// `count` message events were written to a client by this thread.
pub fn count_events_sent(count: u32) {
    EVENTS_SENT.with(|sent| sent.fetch_add(u64::from(count), Ordering::Relaxed));
}

fn events_sent() -> u64 {
    let threads = EVENTS_BY_THREAD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    threads
        .iter()
        .map(|sent| sent.load(Ordering::Relaxed))
        .sum()
}

/// Whether this write gives a delivery-lag sample.
pub fn delivery_lag_sample_due() -> bool {
    WRITES.with(|writes| {
        let n = writes.get();
        writes.set(n.wrapping_add(1));
        n % LAG_SAMPLE_EVERY == 0
    })
}

/// Messages taken from the broker by this process, for sampling the bus lag.
static ARRIVALS: AtomicU64 = AtomicU64::new(0);

/// Records, for one message in [`LAG_SAMPLE_EVERY`] taken from the broker,
/// how long after it was stored it arrived here (`json` is the message).
pub fn sample_bus_lag(json: &[u8]) {
    if !ARRIVALS
        .fetch_add(1, Ordering::Relaxed)
        .is_multiple_of(u64::from(LAG_SAMPLE_EVERY))
    {
        return;
    }
    if let Some(stored_ms) = protocol::message::stored_millis_of_frame(json) {
        STREAMS
            .bus_lag
            .record(millis_since(stored_ms) as f64 / 1000.0);
    }
}

/// Records how long a message spent on this node before its write.
pub fn record_fanout(on_node: std::time::Duration) {
    STREAMS.fanout.record(on_node.as_secs_f64());
    crate::fanout_report::sample(on_node);
}

/// Records the lag of a message stored at `stored_ms` (since the Unix epoch).
pub fn record_delivery_lag(stored_ms: i64) {
    STREAMS
        .delivery_lag
        .record(millis_since(stored_ms) as f64 / 1000.0);
}

/// Milliseconds from `stored_ms` (since the Unix epoch) to now, 0 at least.
fn millis_since(stored_ms: i64) -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let now_ms = now.map_or(0, |now| i64::try_from(now.as_millis()).unwrap_or(i64::MAX));
    now_ms.saturating_sub(stored_ms).max(0)
}

/// Made on first use, which comes after the recorder is installed (at start).
pub static STREAMS: LazyLock<StreamMetrics> = LazyLock::new(|| StreamMetrics {
    replayed: counter!(names::REPLAYED_EVENTS),
    slow_clients: counter!(names::SLOW_CLIENTS),
    delivery_lag: histogram!(names::DELIVERY_LAG),
    fanout: histogram!(names::FANOUT_DURATION),
    bus_lag: histogram!(names::BUS_LAG),
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
        names::HISTORY_READS_SHARED,
        "History reads served by a read of the same page already in flight"
    );
    describe_counter!(
        names::SLOW_CLIENTS,
        "Times a stream fell behind the live ring"
    );
    describe_histogram!(
        names::DELIVERY_LAG,
        Unit::Seconds,
        "From a message's store to its write to a client (one write in 64 sampled)"
    );
    describe_histogram!(
        names::FANOUT_DURATION,
        Unit::Seconds,
        "From this node receiving a message to its write to a client (the same samples)"
    );
    describe_histogram!(
        names::BUS_LAG,
        Unit::Seconds,
        "From a message's store to its arrival on this node (one in 64 sampled)"
    );
    describe_counter!(
        names::SIGNALS_DELIVERED,
        "Signals (typing, read markers) handed to the streams of a channel this node follows"
    );
    describe_counter!(
        names::SIGNALS_DROPPED,
        "Signals not passed on, by reason (invalid: not a signal of its topic's channel)"
    );
    LazyLock::force(&STREAMS);
    counter!(names::SIGNALS_DELIVERED).absolute(0);
    counter!(names::SIGNALS_DROPPED, "reason" => "invalid").absolute(0);
    counter!(names::BACKFILLS).absolute(0);
    counter!(names::HISTORY_READS_SHARED).absolute(0);
    counter!(names::SSE_EVENTS_SENT).absolute(0);
}

/// A signal went to the streams of a channel this node follows.
pub fn signal_delivered() {
    counter!(names::SIGNALS_DELIVERED).increment(1);
}

/// What came on a signals topic was not a signal of that channel.
pub fn signal_dropped() {
    counter!(names::SIGNALS_DROPPED, "reason" => "invalid").increment(1);
}

/// A history read joined one of the same page in flight.
pub fn history_read_shared() {
    counter!(names::HISTORY_READS_SHARED).increment(1);
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
    counter!(names::SSE_EVENTS_SENT).absolute(events_sent());
    gauge!(names::SSE_CONNECTIONS).set(open_streams() as f64);
    gauge!(names::CHANNELS_ACTIVE).set(state.hub.channel_count() as f64);
    let connected = f64::from(u8::from(state.broker.is_connected()));
    gauge!(names::BROKER_CONNECTED, "connection" => "subscriber").set(connected);
}

/// `GET /metrics`.
pub async fn scrape(state: web::Data<AppState>) -> HttpResponse {
    response(render(&state))
}
