//! `--webhook-url`: every stored message reaches every webhook as a signed
//! event, once, in id order per channel; an app that is down gets everything
//! once it is back; a `kill -9` of the chat-service loses nothing and repeats
//! only what it had not recorded as delivered; bad settings stop the start.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use protocol::ChannelId;

use crate::broker::Broker;
use server::metrics::names;

use crate::helpers::{CHAT_SERVICE, TestApp, WAIT, eventually, new_channel};
use crate::metrics::Samples;
use crate::webhook_app::{Answer, Received, WebhookApp};

const SECRET: &str = "whsec_test_secret";

async fn app_with_webhooks(urls: &[String], flags: &[&str]) -> TestApp {
    let mut chat_flags: Vec<&str> = vec!["--webhook-secret", SECRET];
    for url in urls {
        chat_flags.extend(["--webhook-url", url.as_str()]);
    }
    chat_flags.extend_from_slice(flags);
    TestApp::with_options(Broker::embedded(), &chat_flags, &[]).await
}

/// Posts `count` messages to each channel: the channels at once, each one's
/// messages one after the other.
async fn post_to_each(app: &TestApp, channels: &[ChannelId], count: usize) {
    let posts = channels.iter().map(|channel| async move {
        for n in 0..count {
            app.post_message(*channel, "ann", &format!("message {n}"))
                .await;
        }
    });
    futures_util::future::join_all(posts).await;
}

/// Per channel, the log ids of the events in the order they were acknowledged.
fn ids_per_channel(received: &[Received]) -> HashMap<String, Vec<u64>> {
    let mut per_channel: HashMap<String, Vec<u64>> = HashMap::new();
    for event in received {
        per_channel
            .entry(event.channel().to_string())
            .or_default()
            .push(event.log_id());
    }
    per_channel
}

/// The same, each event counted once (its first delivery).
fn distinct_ids_per_channel(received: &[Received]) -> HashMap<String, Vec<u64>> {
    let mut seen = HashSet::new();
    let first: Vec<Received> = received
        .iter()
        .filter(|event| seen.insert(event.event_id().to_string()))
        .cloned()
        .collect();
    ids_per_channel(&first)
}

fn expect_every_channel(
    per_channel: &HashMap<String, Vec<u64>>,
    channels: &[ChannelId],
    count: u64,
    who: &str,
) {
    let expected: Vec<u64> = (1..=count).collect();
    for channel in channels {
        assert_eq!(
            per_channel.get(&channel.to_string()),
            Some(&expected),
            "{who}: channel {channel}"
        );
    }
    assert_eq!(per_channel.len(), channels.len(), "{who}: no other channel");
}

async fn webhook_backlog(app: &TestApp) -> Option<u64> {
    let (_, report) = app.chat_readiness().await;
    report["webhook_backlog"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_reaches_every_webhook_once_in_order_and_filters_apply() {
    let receiver = WebhookApp::start(SECRET).await;
    let urls = [
        receiver.url("all", ""),
        receiver.url("created", "#events=message.created"),
        receiver.url("messages", "#events=message.*"),
        receiver.url("deleted", "#events=message.deleted"),
    ];
    let app = app_with_webhooks(&urls, &[]).await;
    let channels: Vec<ChannelId> = (0..3).map(|_| new_channel()).collect();

    post_to_each(&app, &channels, 10).await;

    for name in ["all", "created", "messages"] {
        eventually(&format!("{name} got 30 events"), || async {
            receiver.received(name).len() >= 30
        })
        .await;
    }
    eventually("the webhook backlog is empty", || async {
        webhook_backlog(&app).await == Some(0)
    })
    .await;
    for name in ["all", "created", "messages"] {
        let received = receiver.received(name);
        assert_eq!(received.len(), 30, "{name}: each event once");
        expect_every_channel(&ids_per_channel(&received), &channels, 10, name);
    }
    assert!(
        receiver.received("deleted").is_empty(),
        "a webhook that wants only deletions got no message"
    );
    receiver.assert_every_signature_was_valid();
    let metrics = Samples::of(&app.http, app.chat_url()).await;
    let delivered = [("outcome", "delivered")];
    assert_eq!(metrics.value(names::WEBHOOK_DELIVERIES, &delivered), 90.0);
    assert_eq!(metrics.value(names::WEBHOOK_BACKLOG, &[]), 0.0);
    let timed = format!("{}_count", names::WEBHOOK_DURATION);
    let posts = metrics.value(&timed, &[]);
    assert_eq!(posts, receiver.attempts() as f64, "every POST timed");

    let channel = channels[0];
    let history = app.history(channel, "").await;
    let event = &receiver
        .received("all")
        .into_iter()
        .find(|e| e.channel() == channel.to_string() && e.log_id() == 3)
        .expect("event 3")
        .event;
    assert_eq!(event["id"], format!("{channel}:3"));
    assert_eq!(event["type"], "message.created");
    assert_eq!(event["channel"], channel.to_string());
    assert_eq!(event["ts"], history[2].ts);
    assert_eq!(
        serde_json::from_value::<protocol::Message>(event["data"].clone()).expect("a message"),
        history[2],
        "the data is the stored message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_is_down_gets_everything_in_order_once_it_is_back() {
    // Nothing listens on the port at first: connections are refused.
    let reserved = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = reserved.local_addr().expect("address");
    drop(reserved);
    let url = format!("http://{address}/hooks/down");
    let app = app_with_webhooks(&[url], &["--webhook-max-backoff", "300ms"]).await;
    let channels: Vec<ChannelId> = (0..2).map(|_| new_channel()).collect();
    post_to_each(&app, &channels, 5).await;
    eventually("the backlog shows the undelivered events", || async {
        webhook_backlog(&app).await == Some(10)
    })
    .await;

    // Then it listens, but fails every event.
    let listener = TcpListener::bind(address).expect("the same port again");
    let receiver = WebhookApp::on(listener, SECRET);
    receiver.answer(Answer::Fail);
    eventually("the app is asked again and again", || async {
        receiver.attempts() >= 6
    })
    .await;
    post_to_each(&app, &channels, 5).await;
    assert!(receiver.received("down").is_empty(), "nothing acknowledged");

    receiver.answer(Answer::Accept);
    eventually("every event arrived", || async {
        receiver.received("down").len() >= 20
    })
    .await;
    let received = receiver.received("down");
    assert_eq!(received.len(), 20, "each event once");
    expect_every_channel(
        &ids_per_channel(&received),
        &channels,
        10,
        "after the outage",
    );
    eventually("the backlog is empty again", || async {
        webhook_backlog(&app).await == Some(0)
    })
    .await;
    receiver.assert_every_signature_was_valid();
    let metrics = Samples::of(&app.http, app.chat_url()).await;
    let failed = metrics.value(names::WEBHOOK_DELIVERIES, &[("outcome", "failed")]);
    assert!(failed >= 6.0, "failed attempts are counted: {failed}");
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_delivery_loses_nothing_and_repeats_only_what_was_not_recorded() {
    let receiver = WebhookApp::start(SECRET).await;
    receiver.answer(Answer::Slowly);
    let url = receiver.url("crash", "");
    let mut app = app_with_webhooks(&[url], &["--webhook-concurrency", "1"]).await;
    let channels: Vec<ChannelId> = (0..2).map(|_| new_channel()).collect();
    post_to_each(&app, &channels, 40).await;
    eventually("delivery is under way", || async {
        receiver.received("crash").len() >= 20
    })
    .await;

    app.kill_chat_service();
    let killed_at = Instant::now();
    let before_kill = receiver.received("crash");
    assert!(before_kill.len() < 80, "the kill came mid-delivery");
    receiver.answer(Answer::Accept);
    app.start_chat_service_again();
    app.wait_until_ready().await;

    eventually("every event arrived after the restart", || async {
        distinct_ids_per_channel(&receiver.received("crash"))
            .values()
            .map(Vec::len)
            .sum::<usize>()
            >= 80
    })
    .await;
    let received = receiver.received("crash");
    expect_every_channel(
        &distinct_ids_per_channel(&received),
        &channels,
        40,
        "deduplicated by event id",
    );
    let after_kill = &received[before_kill.len()..];
    let repeated: Vec<&Received> = before_kill
        .iter()
        .filter(|early| {
            after_kill
                .iter()
                .any(|late| late.event_id() == early.event_id())
        })
        .collect();
    // A cursor is recorded at each acknowledgement and reaches the disk with
    // the next sync (at most half a second later with sled's flusher): only
    // events acknowledged in that window may come again.
    let window = Duration::from_secs(2);
    for event in &repeated {
        assert!(
            killed_at.duration_since(event.at) < window,
            "{} was acknowledged {:?} before the kill, yet sent again",
            event.event_id(),
            killed_at.duration_since(event.at)
        );
    }
    receiver.assert_every_signature_was_valid();
}

/// Starts the chat-service with `flags`; it must refuse to start, saying `why`.
async fn expect_refusal(flags: &[&str], why: &str) {
    let data = tempfile::tempdir().expect("temp dir");
    let output = tokio::process::Command::new(CHAT_SERVICE)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path().join("history"))
        .args(flags)
        .env_remove("CRIER_WEBHOOK_SECRET")
        .env_remove("CRIER_WEBHOOK_URLS")
        .output();
    let output = tokio::time::timeout(WAIT, output)
        .await
        .expect("it stops at once")
        .expect("it runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{flags:?} must not start: {text}");
    assert!(text.contains(why), "{flags:?}: {why:?} not in {text}");
}

#[tokio::test]
async fn bad_webhook_settings_stop_the_start_with_a_clear_message() {
    expect_refusal(
        &["--webhook-url", "http://127.0.0.1:9/hooks"],
        "--webhook-url needs --webhook-secret",
    )
    .await;
    expect_refusal(
        &["--webhook-url", "ftp://app.local/", "--webhook-secret", "s"],
        "is not an http:// or https:// URL with a host",
    )
    .await;
    expect_refusal(
        &[
            "--webhook-url",
            "http://app.local/h#events=message.sent",
            "--webhook-secret",
            "s",
        ],
        "names no event",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletions_reach_webhooks_as_their_own_events() {
    let receiver = WebhookApp::start(SECRET).await;
    let urls = [
        receiver.url("all", ""),
        receiver.url("deleted", "#events=message.deleted"),
    ];
    let app = app_with_webhooks(&urls, &[]).await;
    let channel = new_channel();
    app.post_message(channel, "ann", "helo").await;
    let base = format!(
        "{}/channels/{channel}/messages/1?author=ann",
        app.chat_url()
    );
    let edit = app
        .http
        .patch(&base)
        .json(&serde_json::json!({"text": "hello"}));
    assert!(edit.send().await.expect("edit").status().is_success());
    let delete = app.http.delete(&base).send().await.expect("delete");
    assert!(delete.status().is_success());

    eventually("three events", || async {
        receiver.received("all").len() >= 3
    })
    .await;
    let types: Vec<(u64, String)> = receiver
        .received("all")
        .iter()
        .map(|e| {
            (
                e.log_id(),
                e.event["type"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expected = [
        (1, "message.created"),
        (2, "message.updated"),
        (3, "message.deleted"),
    ]
    .map(|(id, kind)| (id, kind.to_string()));
    assert_eq!(types, expected);
    let all = receiver.received("all");
    assert_eq!(all[1].event["data"]["target"], 1);
    assert_eq!(all[1].event["data"]["text"], "hello");
    eventually("the deletion reached the filtered webhook", || async {
        receiver.received("deleted").len() == 1
    })
    .await;
    assert_eq!(receiver.received("deleted")[0].log_id(), 3);
    receiver.assert_every_signature_was_valid();
}
