//! Signals (typing, read markers) end to end: POSTed to chat-service, carried
//! by the broker on the channel's signals topic, written by broadcast-sse as
//! `event: signal` with no `id:`, and never stored, numbered or replayed; in
//! the split deployment and in the all-in-one.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use protocol::signal::SignalType;
use protocol::{ChannelId, Signal, topic};
use reqwest::StatusCode;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, QoS};
use serde_json::{Value, json};

use crate::all_in_one::start_crier_with_broker;
use crate::broker::Broker;
use crate::helpers::{TestApp, WAIT, error_of, http_client, new_channel};

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An SSE stream read as raw events (blocks between blank lines), so a test
/// sees exactly which fields each event has.
struct RawStream {
    body: Body,
    buffer: String,
}

impl RawStream {
    /// Opens `url`; once the headers are in, the node is subscribed.
    async fn open(http: &reqwest::Client, url: String, last_event_id: Option<u64>) -> RawStream {
        let mut request = http.get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .expect("stream opens in time")
            .expect("stream request succeeds");
        assert_eq!(response.status(), StatusCode::OK, "stream answers 200");
        RawStream {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event that is not `retry:` or a comment.
    async fn next_event(&mut self) -> String {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let fields = event.trim_end().to_string();
                if fields
                    .lines()
                    .all(|l| l.starts_with(':') || l.starts_with("retry:"))
                {
                    continue;
                }
                return fields;
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("an event arrives in time")
                .expect("the stream is still open")
                .expect("the stream reads");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event, which must be a signal: no `id:` line, its data parsed.
    async fn next_signal(&mut self) -> Signal {
        let event = self.next_event().await;
        signal_of(&event)
    }

    /// The next event, which must be a message: its id.
    async fn next_message_id(&mut self) -> u64 {
        let event = self.next_event().await;
        assert!(event.contains("event: message"), "a message: {event}");
        field(&event, "id: ").parse().expect("a numeric id")
    }
}

fn field<'a>(event: &'a str, name: &str) -> &'a str {
    event
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .unwrap_or_default()
}

/// The signal an event carries; it must be `event: signal` with no `id:`.
fn signal_of(event: &str) -> Signal {
    assert_eq!(field(event, "event: "), "signal", "a signal: {event}");
    assert!(
        !event.lines().any(|line| line.starts_with("id:")),
        "a signal has no id: {event}"
    );
    Signal::parse(field(event, "data: ").as_bytes()).expect("the data is a valid signal")
}

async fn post_signal(
    http: &reqwest::Client,
    base: &str,
    channel: &str,
    body: &Value,
) -> reqwest::Response {
    http.post(format!("{base}/channels/{channel}/signals"))
        .json(body)
        .send()
        .await
        .expect("POST reaches chat-service")
}

/// POSTs a signal that must be accepted; returns the signal answered.
async fn signal(http: &reqwest::Client, base: &str, channel: ChannelId, body: Value) -> Signal {
    let response = post_signal(http, base, &channel.to_string(), &body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{body}");
    response.json().await.expect("the answer is the signal")
}

fn stream_url(app: &TestApp, channel: ChannelId) -> String {
    format!("{}/channels/{channel}/events", app.sse.url)
}

#[tokio::test]
async fn typing_and_read_signals_reach_an_open_stream_without_an_id() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    let mut stream = RawStream::open(&app.http, stream_url(&app, channel), None).await;
    let message = app.post_message(channel, "ann", "hello").await;
    assert_eq!(stream.next_message_id().await, message.id);

    let typing = json!({"type": "typing", "author": "bob"});
    let answered = signal(&app.http, app.chat_url(), channel, typing).await;
    assert_eq!(
        (answered.kind, answered.channel, answered.author.as_str()),
        (SignalType::Typing, channel, "bob")
    );
    assert_eq!(answered.id, None);
    assert_eq!(stream.next_signal().await, answered);

    let read = json!({"type": "read", "id": message.id, "author": "bob"});
    let answered = signal(&app.http, app.chat_url(), channel, read).await;
    assert_eq!((answered.kind, answered.id), (SignalType::Read, Some(1)));
    assert_eq!(stream.next_signal().await, answered);
}

#[tokio::test]
async fn signals_are_not_stored_not_numbered_and_not_replayed() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    let mut live = RawStream::open(&app.http, stream_url(&app, channel), None).await;
    app.post_message(channel, "ann", "one").await;
    signal(
        &app.http,
        app.chat_url(),
        channel,
        json!({"type": "typing", "author": "ann"}),
    )
    .await;
    signal(
        &app.http,
        app.chat_url(),
        channel,
        json!({"type": "read", "id": 1, "author": "bob"}),
    )
    .await;
    let two = app.post_message(channel, "ann", "two").await;
    assert_eq!(two.id, 2, "the next message's id is the next number");
    // A signal does not wait for the messages stored before it: only the
    // messages' order is kept.
    let (mut ids, mut signals) = (Vec::new(), 0);
    while ids.len() < 2 || signals < 2 {
        let event = live.next_event().await;
        if event.contains("event: signal") {
            signal_of(&event);
            signals += 1;
        } else {
            ids.push(field(&event, "id: ").parse::<u64>().expect("a message id"));
        }
    }
    assert_eq!(ids, [1, 2], "the messages in order, no gap on the stream");

    let ids: Vec<u64> = app
        .history(channel, "")
        .await
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, [1, 2], "history holds the messages alone");
    let mut resumed = RawStream::open(&app.http, stream_url(&app, channel), Some(0)).await;
    assert_eq!(resumed.next_message_id().await, 1);
    assert_eq!(
        resumed.next_message_id().await,
        2,
        "a resume replays messages, never signals"
    );
}

#[tokio::test]
async fn bad_signals_get_json_errors_and_reach_no_stream() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    let mut stream = RawStream::open(&app.http, stream_url(&app, channel), None).await;
    let c = channel.to_string();
    let cases: [(&str, Value, StatusCode, &str); 8] = [
        (
            "general",
            json!({"type": "typing", "author": "a"}),
            StatusCode::BAD_REQUEST,
            "invalid_channel",
        ),
        (
            &c,
            json!({"type": "wave", "author": "a"}),
            StatusCode::BAD_REQUEST,
            "invalid_signal",
        ),
        (
            &c,
            json!({"author": "a"}),
            StatusCode::BAD_REQUEST,
            "invalid_signal",
        ),
        (
            &c,
            json!({"type": "read", "author": "a"}),
            StatusCode::BAD_REQUEST,
            "invalid_signal",
        ),
        (
            &c,
            json!({"type": "read", "id": 0, "author": "a"}),
            StatusCode::BAD_REQUEST,
            "invalid_signal",
        ),
        (
            &c,
            json!({"type": "typing", "id": 3, "author": "a"}),
            StatusCode::BAD_REQUEST,
            "invalid_signal",
        ),
        (
            &c,
            json!({"type": "typing"}),
            StatusCode::BAD_REQUEST,
            "invalid_author",
        ),
        (
            &c,
            json!(["typing"]),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
    ];
    for (channel, body, status, code) in cases {
        let response = post_signal(&app.http, app.chat_url(), channel, &body).await;
        let (got, error) = error_of(response).await;
        assert_eq!(
            (got, error.error.code.as_str()),
            (status, code),
            "{channel} {body}"
        );
    }
    let url = format!("{}/channels/{channel}/signals", app.chat_url());
    let plain = app
        .http
        .post(&url)
        .header("content-type", "text/plain")
        .body("typing");
    let (status, error) = error_of(plain.send().await.expect("POST")).await;
    assert_eq!(
        (status, error.error.code.as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let padding = "x".repeat(5000);
    let large = json!({"type": "typing", "author": "a", "padding": padding});
    let response = post_signal(&app.http, app.chat_url(), &c, &large).await;
    let (status, error) = error_of(response).await;
    assert_eq!(
        (status, error.error.code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );

    let good = signal(
        &app.http,
        app.chat_url(),
        channel,
        json!({"type": "typing", "author": "ok"}),
    )
    .await;
    assert_eq!(
        stream.next_signal().await,
        good,
        "the first signal the stream sees"
    );
    assert!(app.history(channel, "").await.is_empty());
}

#[tokio::test]
async fn a_banned_author_may_not_signal_and_a_busy_one_is_rate_limited() {
    let flags = ["--signal-rate-per-sec", "1", "--signal-burst", "2"];
    let app = TestApp::with_options(Broker::embedded(), &flags, &[]).await;
    let channel = new_channel();
    let ban = json!([{"name": "eve", "channel": channel.to_string(), "expire": 60}]);
    let banned = app.http.post(format!("{}/bans", app.chat_url())).json(&ban);
    assert!(
        banned
            .send()
            .await
            .expect("POST /bans")
            .status()
            .is_success()
    );
    let eve = json!({"type": "typing", "author": "eve"});
    let (status, error) =
        error_of(post_signal(&app.http, app.chat_url(), &channel.to_string(), &eve).await).await;
    assert_eq!(
        (status, error.error.code.as_str()),
        (StatusCode::FORBIDDEN, "banned")
    );

    let ann = json!({"type": "typing", "author": "ann"});
    for _ in 0..2 {
        signal(&app.http, app.chat_url(), channel, ann.clone()).await;
    }
    let response = post_signal(&app.http, app.chat_url(), &channel.to_string(), &ann).await;
    assert!(
        response.headers().contains_key("retry-after"),
        "429 says when to retry"
    );
    let (status, error) = error_of(response).await;
    assert_eq!(
        (status, error.error.code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert!(
        error.error.message.contains("signals"),
        "{}",
        error.error.message
    );
    signal(
        &app.http,
        app.chat_url(),
        channel,
        json!({"type": "typing", "author": "bob"}),
    )
    .await;
    app.post_message(channel, "ann", "messages have their own budget")
        .await;
}

/// An MQTT client of `broker_url` subscribed (QoS 0) to `filter`, once the
/// broker acknowledged it.
async fn mqtt_watcher(broker_url: &str, name: &str, filter: String) -> (AsyncClient, EventLoop) {
    let broker = server::mqtt::BrokerUrl::parse(broker_url, None).expect("broker url");
    let (client, mut eventloop) = AsyncClient::new(broker.options(name), 64);
    client
        .subscribe(filter, QoS::AtMostOnce)
        .await
        .expect("subscribe queued");
    let subscribed = async {
        loop {
            let event = eventloop.poll().await.expect("watcher connects");
            if matches!(event, Event::Incoming(Incoming::SubAck(_))) {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, subscribed)
        .await
        .expect("subscribed in time");
    (client, eventloop)
}

/// The next publish the watcher gets: its topic, QoS, retain flag and payload.
async fn next_publish(eventloop: &mut EventLoop) -> rumqttc::Publish {
    let publish = async {
        loop {
            let event = eventloop.poll().await.expect("watcher stays connected");
            if let Event::Incoming(Incoming::Publish(publish)) = event {
                return publish;
            }
        }
    };
    tokio::time::timeout(WAIT, publish)
        .await
        .expect("a publish in time")
}

#[tokio::test]
async fn an_mqtt_client_sees_signals_on_the_signals_topic_at_qos_0() {
    let app = TestApp::on(Broker::embedded()).await;
    let channel = new_channel();
    let signals_topic = topic::signals_topic(&app.prefix, channel);
    let (_client, mut eventloop) = mqtt_watcher(
        &app.broker.url,
        "crier-test-signal-watcher",
        signals_topic.clone(),
    )
    .await;
    let sent = signal(
        &app.http,
        app.chat_url(),
        channel,
        json!({"type": "typing", "author": "ann"}),
    )
    .await;
    let publish = next_publish(&mut eventloop).await;
    assert_eq!(publish.topic, signals_topic);
    assert_eq!((publish.qos, publish.retain), (QoS::AtMostOnce, false));
    assert_eq!(Signal::parse(&publish.payload), Ok(sent));
}

#[tokio::test]
async fn what_a_device_publishes_on_the_signals_topic_reaches_streams_only_if_it_is_a_signal() {
    let app = TestApp::on(Broker::embedded()).await;
    let (channel, other) = (new_channel(), new_channel());
    let mut stream = RawStream::open(&app.http, stream_url(&app, channel), None).await;
    let broker = server::mqtt::BrokerUrl::parse(&app.broker.url, None).expect("broker url");
    let (device, mut eventloop) = AsyncClient::new(broker.options("crier-test-device"), 64);
    let driver = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let topic = topic::signals_topic(&app.prefix, channel);
    let of_other = Signal::new(SignalType::Typing, other, "mallory".into(), None, None);
    let fine = Signal::new(SignalType::Read, channel, "device".into(), Some(4), None);
    let payloads = [
        b"not json".to_vec(),
        br#"{"type":"typing","channel":"nope","author":"x","ts":"2026-01-01T00:00:00.000Z"}"#
            .to_vec(),
        serde_json::to_vec(&of_other).expect("json"),
        serde_json::to_vec(&fine).expect("json"),
    ];
    for payload in payloads {
        device
            .publish(&topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish queued");
    }
    assert_eq!(
        stream.next_signal().await,
        fine,
        "only the valid signal of this channel"
    );
    driver.abort();
}

#[tokio::test]
async fn a_stream_of_several_channels_gets_the_signals_of_each() {
    let app = TestApp::on(Broker::embedded()).await;
    let (a, b) = (new_channel(), new_channel());
    let url = format!("{}/events?channel={a}&channel={b}", app.sse.url);
    let mut stream = RawStream::open(&app.http, url, None).await;
    let on_a = signal(
        &app.http,
        app.chat_url(),
        a,
        json!({"type": "typing", "author": "ann"}),
    )
    .await;
    assert_eq!(stream.next_signal().await, on_a);
    let on_b = signal(
        &app.http,
        app.chat_url(),
        b,
        json!({"type": "typing", "author": "bob"}),
    )
    .await;
    assert_eq!(stream.next_signal().await, on_b);
}

/// The all-in-one publishes signals through its in-process link to its
/// embedded broker, where its streams and any MQTT client get them.
#[tokio::test]
async fn crier_carries_signals_through_its_embedded_broker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (crier, broker_address) = start_crier_with_broker(&dir).await;
    let http = http_client();
    let channel = new_channel();
    let broker_url = format!("mqtt://{broker_address}");
    let filter = topic::signals_topic("crier", channel);
    let (_client, mut eventloop) =
        mqtt_watcher(&broker_url, "crier-test-aio-watcher", filter).await;
    let url = format!("{}/channels/{channel}/events", crier.url);
    let mut stream = RawStream::open(&http, url.clone(), None).await;
    let message = http
        .post(format!("{}/channels/{channel}/messages", crier.url))
        .json(&json!({"author": "ann", "text": "one"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(message.status(), StatusCode::CREATED);
    assert_eq!(stream.next_message_id().await, 1);

    let sent = signal(
        &http,
        &crier.url,
        channel,
        json!({"type": "read", "id": 1, "author": "bob"}),
    )
    .await;
    assert_eq!(stream.next_signal().await, sent);
    let publish = next_publish(&mut eventloop).await;
    assert_eq!(
        (publish.qos, Signal::parse(&publish.payload)),
        (QoS::AtMostOnce, Ok(sent))
    );

    let mut resumed = RawStream::open(&http, url, Some(0)).await;
    assert_eq!(resumed.next_message_id().await, 1);
    let second = http
        .post(format!("{}/channels/{channel}/messages", crier.url))
        .json(&json!({"author": "ann", "text": "two"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(second.status(), StatusCode::CREATED);
    assert_eq!(
        resumed.next_message_id().await,
        2,
        "no signal replayed, no id taken"
    );
}
