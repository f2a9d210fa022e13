//! `GET /metrics`: counters are exact against the traffic sent, gauges follow
//! the open streams, the all-in-one serves both services' metrics, and
//! `--metrics-listen` moves them to an address of their own.

use protocol::topic;
use reqwest::StatusCode;
use serde_json::json;
use server::metrics::names;

use crate::broker::Broker;
use crate::helpers::{CRIER, TestApp, eventually, new_channel, open_stream, wait_for_ready};
use crate::mqtt_posts::MqttClient;
use crate::process::Service;

/// The samples of one `/metrics` answer.
pub struct Samples(String);

impl Samples {
    pub async fn of(http: &reqwest::Client, base: &str) -> Samples {
        let response = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers().get("content-type").cloned();
        let content_type = content_type.and_then(|value| value.to_str().ok().map(str::to_string));
        assert!(
            content_type.is_some_and(|value| value.starts_with("text/plain; version=0.0.4")),
            "Prometheus' text format"
        );
        Samples(response.text().await.expect("metrics text"))
    }

    /// The value of `name` with exactly `labels`, or 0 when it has no sample yet.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        wanted.sort();
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' '))
            .find(|(series, _)| {
                let (series_name, series_labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, rest.trim_end_matches('}')),
                    None => (*series, ""),
                };
                let mut found: Vec<String> = series_labels
                    .split(',')
                    .filter(|label| !label.is_empty())
                    .map(str::to_string)
                    .collect();
                found.sort();
                series_name == name && found == wanted
            })
            .map_or(0.0, |(_, value)| value.parse().expect("a number"))
    }
}

/// N POSTs count N accepted; K open streams are K connections and 0 once
/// closed; M messages to K streams count M×K events; refusals count by code
/// and source; the broker connections read 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_the_traffic_and_gauges_follow_the_streams() {
    let app = TestApp::on(Broker::embedded()).await;
    let chat = app.chat_url().to_string();
    let sse = app.sse.url.clone();
    let channel = new_channel();
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(app.open_stream(channel, None).await);
    }
    let connections = Samples::of(&app.http, &sse).await;
    assert_eq!(connections.value(names::SSE_CONNECTIONS, &[]), 3.0);
    assert_eq!(connections.value(names::CHANNELS_ACTIVE, &[]), 1.0);

    for n in 1..=5 {
        app.post_message(channel, "ann", &format!("message {n}"))
            .await;
    }
    let refused = app
        .http
        .post(format!("{chat}/channels/{channel}/messages"))
        .json(&json!({"author": "ann"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let mut poster = MqttClient::connect(&app.broker.url, "crier-test-metrics-poster").await;
    let posts = topic::post_topic(&app.prefix, channel);
    poster
        .post(&posts, json!({"author": "dev"}).to_string())
        .await;
    poster
        .post(&posts, json!({"author": "dev", "text": "six"}).to_string())
        .await;
    for stream in &mut streams {
        assert_eq!(stream.next_ids(6).await, [1, 2, 3, 4, 5, 6]);
    }

    let chat_metrics = Samples::of(&app.http, &chat).await;
    let accepted = |source| chat_metrics.value(names::MESSAGES_ACCEPTED, &[("source", source)]);
    assert_eq!((accepted("http"), accepted("mqtt")), (5.0, 1.0));
    let refused = |source| {
        let labels = [("code", "invalid_text"), ("source", source)];
        chat_metrics.value(names::MESSAGES_REJECTED, &labels)
    };
    assert_eq!((refused("http"), refused("mqtt")), (1.0, 1.0));
    let count = format!("{}_count", names::POST_DURATION);
    assert_eq!(chat_metrics.value(&count, &[]), 6.0, "every POST is timed");
    let queue_waits = chat_metrics.value(&format!("{}_count", names::STORE_QUEUE_WAIT), &[]);
    assert!(
        (1.0..=6.0).contains(&queue_waits),
        "one wait per write of the 6 messages, got {queue_waits}"
    );
    let to_broker = chat_metrics.value(&format!("{}_count", names::PUBLISH_DURATION), &[]);
    assert_eq!(
        to_broker, 1.0,
        "the first of 64 acknowledged publishes is timed"
    );
    let publisher = [("connection", "publisher")];
    assert_eq!(chat_metrics.value(names::BROKER_CONNECTED, &publisher), 1.0);
    assert_eq!(chat_metrics.value(names::OUTBOX_DEPTH, &[]), 0.0);

    let sse_metrics = Samples::of(&app.http, &sse).await;
    assert_eq!(
        sse_metrics.value(names::SSE_EVENTS_SENT, &[]),
        18.0,
        "6 messages × 3 streams"
    );
    let lag_samples = format!("{}_count", names::DELIVERY_LAG);
    assert!(
        sse_metrics.value(&lag_samples, &[]) >= 1.0,
        "delivery lag recorded"
    );
    let bus_samples = format!("{}_count", names::BUS_LAG);
    assert!(
        sse_metrics.value(&bus_samples, &[]) >= 1.0,
        "the first message from the broker is sampled"
    );
    let fanout_samples = format!("{}_count", names::FANOUT_DURATION);
    assert_eq!(
        sse_metrics.value(&fanout_samples, &[]),
        sse_metrics.value(&lag_samples, &[]),
        "the time on the node, on the same samples"
    );
    let subscriber = [("connection", "subscriber")];
    assert_eq!(sse_metrics.value(names::BROKER_CONNECTED, &subscriber), 1.0);

    drop(streams);
    eventually("closed streams leave the gauge", || async {
        Samples::of(&app.http, &sse)
            .await
            .value(names::SSE_CONNECTIONS, &[])
            == 0.0
    })
    .await;
}

/// A resume is counted as replayed events, on top of the events sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_counts_its_replayed_events() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    for n in 1..=4 {
        app.post_message(channel, "ann", &format!("message {n}"))
            .await;
    }
    let mut stream = app.open_stream(channel, Some(1)).await;
    assert_eq!(stream.next_ids(3).await, [2, 3, 4]);
    let samples = Samples::of(&app.http, &app.sse.url).await;
    assert_eq!(samples.value(names::REPLAYED_EVENTS, &[]), 3.0);
    assert_eq!(samples.value(names::SSE_EVENTS_SENT, &[]), 3.0);
}

/// The all-in-one's `/metrics` holds both services' metrics; with
/// `--metrics-listen` they move to that address and leave the main one.
#[tokio::test]
async fn the_all_in_one_serves_both_services_metrics_where_asked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics_address = format!("127.0.0.1:{}", crate::broker::free_port());
    let args = [
        "--listen".to_string(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
        "--metrics-listen".into(),
        metrics_address.clone(),
    ];
    let crier = Service::start(CRIER, &args, &dir.path().join("crier.log"));
    let http = crate::helpers::http_client();
    wait_for_ready(&http, &crier.url).await;
    let channel = new_channel();
    let mut stream = open_stream(&http, &crier.url, channel, None).await;
    for text in ["one", "two"] {
        let response = http
            .post(format!("{}/channels/{channel}/messages", crier.url))
            .json(&json!({"author": "ann", "text": text}))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    assert_eq!(stream.next_ids(2).await, [1, 2]);

    let on_main = http
        .get(format!("{}/metrics", crier.url))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(on_main.status(), StatusCode::NOT_FOUND, "moved away");
    let samples = Samples::of(&http, &format!("http://{metrics_address}")).await;
    let accepted = samples.value(names::MESSAGES_ACCEPTED, &[("source", "http")]);
    assert_eq!(accepted, 2.0);
    assert_eq!(samples.value(names::SSE_EVENTS_SENT, &[]), 2.0);
    assert_eq!(samples.value(names::SSE_CONNECTIONS, &[]), 1.0);
    for connection in ["publisher", "subscriber", "posts"] {
        let labels = [("connection", connection)];
        assert_eq!(
            samples.value(names::BROKER_CONNECTED, &labels),
            1.0,
            "{connection}"
        );
    }
}
