//! Presence events on webhooks: a named stream on a broadcast-sse node makes
//! the chat-service send `channel.occupied` then `presence.joined`, closing
//! the streams sends `presence.left` and `channel.vacated`, each signed like
//! message events; filters apply, and `--webhook-presence-events false`
//! sends none.

use protocol::ChannelId;
use serde_json::{Value, json};

use crate::broker::Broker;
use crate::helpers::{EventStream, TestApp, eventually, new_channel};
use crate::webhook_app::{Received, WebhookApp};

const SECRET: &str = "whsec_presence_secret";

async fn app_with_webhooks(urls: &[String], flags: &[&str]) -> TestApp {
    let mut chat_flags: Vec<&str> = vec!["--webhook-secret", SECRET];
    for url in urls {
        chat_flags.extend(["--webhook-url", url.as_str()]);
    }
    chat_flags.extend_from_slice(flags);
    // A short heartbeat: a node notices a closed stream at its next write.
    TestApp::with_options(Broker::embedded(), &chat_flags, &["--heartbeat-secs", "1"]).await
}

async fn named_stream(app: &TestApp, channel: ChannelId, name: &str) -> EventStream {
    let url = format!("{}/channels/{channel}/events?name={name}", app.sse.url);
    EventStream::from_request(app.http.get(url)).await
}

/// `(type, data)` of each event, in the order the app acknowledged them.
fn kinds(received: &[Received]) -> Vec<(String, Value)> {
    received
        .iter()
        .map(|e| {
            let kind = e.event["type"].as_str().unwrap_or_default().to_string();
            (kind, e.event["data"].clone())
        })
        .collect()
}

fn kind(event: &str, data: Value) -> (String, Value) {
    (event.to_string(), data)
}

async fn presence_subscribers(app: &TestApp, channel: ChannelId) -> Option<u64> {
    let url = format!("{}/channels/{channel}/presence", app.chat_url());
    let response = app.http.get(url).send().await.ok()?;
    let body: Value = response.json().await.ok()?;
    body["subscribers"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_coming_and_going_reach_webhooks_as_presence_events() {
    let receiver = WebhookApp::start(SECRET).await;
    let urls = [
        receiver.url("all", ""),
        receiver.url("presence", "#events=presence.*,channel.*"),
        receiver.url("messages", "#events=message.*"),
    ];
    let app = app_with_webhooks(&urls, &[]).await;
    let channel = new_channel();

    let ann = named_stream(&app, channel, "ann").await;
    eventually("the channel is occupied and ann joined", || async {
        receiver.received("all").len() >= 2
    })
    .await;
    assert_eq!(
        kinds(&receiver.received("all")),
        [
            kind("channel.occupied", json!({"subscribers": 1})),
            kind("presence.joined", json!({"name": "ann"})),
        ]
    );

    let bob = named_stream(&app, channel, "bob").await;
    eventually("bob joined", || async {
        receiver.received("all").len() >= 3
    })
    .await;
    assert_eq!(
        kinds(&receiver.received("all")[2..]),
        [kind("presence.joined", json!({"name": "bob"}))],
        "a second stream only joins"
    );

    drop(ann);
    drop(bob);
    eventually("both left and the channel is vacated", || async {
        receiver.received("all").len() >= 6
    })
    .await;
    let all = receiver.received("all");
    let mut leaving = kinds(&all[3..5]);
    leaving.sort_by_key(|(_, data)| data.to_string());
    assert_eq!(
        leaving,
        [
            kind("presence.left", json!({"name": "ann"})),
            kind("presence.left", json!({"name": "bob"})),
        ]
    );
    assert_eq!(
        kinds(&all[5..]),
        [kind("channel.vacated", json!({"subscribers": 0}))],
        "vacated comes last, and nothing else"
    );
    for event in &all {
        assert_eq!(event.channel(), channel.to_string(), "{:?}", event.event);
        let id = event.event_id();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "a UUID: {id}");
        let ts = event.event["ts"].as_str().unwrap_or_default();
        assert!(ts.ends_with('Z') && ts.len() == 24, "a time: {ts}");
    }
    let mut ids: Vec<&str> = all.iter().map(Received::event_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "every event its own id");

    eventually("the filtered webhook got the same six", || async {
        receiver.received("presence").len() >= 6
    })
    .await;
    assert_eq!(kinds(&receiver.received("presence")), kinds(&all));

    app.post_message(channel, "ann", "after").await;
    eventually("the message reached the messages-only webhook", || async {
        !receiver.received("messages").is_empty()
    })
    .await;
    let messages = kinds(&receiver.received("messages"));
    assert_eq!(messages.len(), 1, "only the message: {messages:?}");
    assert_eq!(messages[0].0, "message.created");
    eventually("the webhook backlog is empty", || async {
        let (_, report) = app.chat_readiness().await;
        report["webhook_backlog"].as_u64() == Some(0)
    })
    .await;
    receiver.assert_every_signature_was_valid();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_presence_events_off_only_messages_are_sent() {
    let receiver = WebhookApp::start(SECRET).await;
    let urls = [receiver.url("all", "")];
    let app = app_with_webhooks(&urls, &["--webhook-presence-events", "false"]).await;
    let channel = new_channel();

    let ann = named_stream(&app, channel, "ann").await;
    eventually("the chat-service sees ann", || async {
        presence_subscribers(&app, channel).await == Some(1)
    })
    .await;
    drop(ann);
    eventually("and sees her leave", || async {
        presence_subscribers(&app, channel).await == Some(0)
    })
    .await;
    app.post_message(channel, "ann", "hello").await;
    eventually("the message arrived", || async {
        !receiver.received("all").is_empty()
    })
    .await;
    let received = kinds(&receiver.received("all"));
    assert_eq!(received.len(), 1, "no presence event: {received:?}");
    assert_eq!(received[0].0, "message.created");
    receiver.assert_every_signature_was_valid();
}
