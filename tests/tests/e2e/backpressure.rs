//! A held fan-out never holds a POST, and a store that cannot keep up refuses
//! with `503` instead of queueing without bound. The broker is frozen with
//! `SIGSTOP` to hold everything behind the store.

use std::time::Duration;

use futures_util::future::join_all;
use protocol::error::ErrorBody;
use reqwest::StatusCode;

use server::metrics::names;

use crate::broker::Broker;
use crate::helpers::{CRIER, TestApp, WAIT, http_client, new_channel, open_stream, wait_for_ready};
use crate::metrics::Samples;
use crate::mqtt_posts::MqttClient;
use crate::process::Service;

/// Open streams in the room whose fan-out is held.
const STREAMS: usize = 2000;

#[tokio::test]
async fn a_post_is_answered_while_the_fan_out_to_2000_streams_is_held() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut broker = Broker::embedded_process();
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--mqtt-url",
        &broker.url,
        "--max-streams-per-address",
        "0",
        "--post-rate-per-sec",
        "0",
        "--data-dir",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .chain([dir.path().join("data").display().to_string()])
    .collect();
    let crier = Service::start(CRIER, &args, &dir.path().join("crier.log"));
    let http = http_client();
    wait_for_ready(&http, &crier.url).await;
    let channel = new_channel();
    let opening = (0..STREAMS).map(|_| open_stream(&http, &crier.url, channel, None));
    let mut streams = join_all(opening).await;

    broker.pause();
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(
        WAIT,
        http.post(format!("{}/channels/{channel}/messages", crier.url))
            .json(&serde_json::json!({"author": "ann", "text": "to a held room"}))
            .send(),
    )
    .await
    .expect("the POST is answered while the fan-out is held")
    .expect("POST");
    assert_eq!(response.status(), StatusCode::CREATED);
    eprintln!(
        "POST answered in {:?} with the fan-out held",
        started.elapsed()
    );

    broker.resume();
    let received = join_all(streams.iter_mut().map(|stream| stream.next_message())).await;
    assert!(
        received
            .iter()
            .all(|message| message.text == "to a held room"),
        "every stream got the message once the fan-out went on"
    );
}

#[tokio::test]
async fn a_full_ingest_queue_answers_503_with_retry_after_and_keeps_every_201() {
    let mut app =
        TestApp::with_options(Broker::embedded_process(), &["--ingest-queue", "1"], &[]).await;
    let channel = new_channel();
    // Frozen, the broker acknowledges nothing: the publisher's window fills,
    // then the store's queues behind it.
    app.broker.pause();
    let url = format!("{}/channels/{channel}/messages", app.chat_url());
    let post = |n: usize| {
        let request = app
            .http
            .post(&url)
            .json(&serde_json::json!({"author": "ann", "text": format!("m{n}")}));
        async move { tokio::time::timeout(Duration::from_secs(3), request.send()).await }
    };
    let mut accepted = Vec::new();
    let mut refused = None;
    let mut waiting = 0;
    for round in 0..10 {
        let answers = join_all((0..200).map(|n| post(round * 200 + n))).await;
        for answer in answers {
            match answer {
                Err(_) => waiting += 1,
                Ok(response) => {
                    let response = response.expect("POST reaches chat-service");
                    match response.status() {
                        StatusCode::CREATED => {
                            let message: protocol::Message = response.json().await.expect("json");
                            accepted.push(message.id);
                        }
                        StatusCode::SERVICE_UNAVAILABLE => refused = Some(response),
                        other => panic!("unexpected answer {other}"),
                    }
                }
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let refused = refused.expect("a full queue refuses a POST");
    let retry_after = refused.headers().get("retry-after").cloned();
    assert_eq!(retry_after.as_ref().map(|v| v.as_bytes()), Some(&b"1"[..]));
    let body: ErrorBody = refused.json().await.expect("our JSON error");
    assert_eq!(body.error.code, "overloaded");
    eprintln!(
        "{} accepted, {waiting} still waiting when the queue refused",
        accepted.len()
    );

    app.broker.resume();
    let history = app.whole_history(channel).await;
    let history: Vec<u64> = history.iter().map(|m| m.id).collect();
    for id in &accepted {
        assert!(
            history.contains(id),
            "#{id} was answered 201 and is in history"
        );
    }
}

/// With `--max-fanout-delay`, a broadcast-sse node that reports writing its
/// messages later than that (here a client of the test's own, on the node's
/// topic) makes POSTs answer `503` at once and store nothing, until it
/// reports keeping up again.
#[tokio::test]
async fn a_node_reporting_a_late_fanout_refuses_posts_until_it_keeps_up() {
    let app = TestApp::with_options(Broker::embedded(), &["--max-fanout-delay", "20ms"], &[]).await;
    let channel = new_channel();
    let before = app.post_message(channel, "ann", "before").await;
    let mut node = MqttClient::connect(&app.broker.url, "crier-test-late-node").await;
    let topic = format!("{}/nodes/late-node/fanout", app.prefix);
    let url = format!("{}/channels/{channel}/messages", app.chat_url());
    let post = |text: &'static str| {
        app.http
            .post(&url)
            .json(&serde_json::json!({"author": "ann", "text": text}))
            .send()
    };
    let mut refused = None;
    // The watcher subscribes in the background: report until it listens.
    for _ in 0..50 {
        node.post(&topic, r#"{"delay_us":100000}"#).await;
        let response = post("while the node is late").await.expect("POST");
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::CREATED);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = refused.expect("a late node's report refuses posts");
    let retry_after = refused.headers().get("retry-after").cloned();
    assert_eq!(retry_after.as_ref().map(|v| v.as_bytes()), Some(&b"1"[..]));
    let body: ErrorBody = refused.json().await.expect("our JSON error");
    assert_eq!(body.error.code, "overloaded");
    let history_while_late = app.whole_history(channel).await.len();

    node.post(&topic, r#"{"delay_us":0}"#).await;
    let mut after = None;
    for _ in 0..50 {
        let response = post("after").await.expect("POST");
        if response.status() == StatusCode::CREATED {
            after = Some(response.json::<protocol::Message>().await.expect("json"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = after.expect("posts are taken once the node keeps up");
    let history = app.whole_history(channel).await;
    assert_eq!(
        history.len(),
        history_while_late + 1,
        "the refused one is not stored"
    );
    assert_eq!(history.first().map(|m| m.id), Some(before.id));
    assert_eq!(history.last().map(|m| m.id), Some(after.id));
    let metrics = Samples::of(&app.http, app.chat_url()).await;
    let refused = [("code", "overloaded"), ("source", "http")];
    assert!(
        metrics.value(names::MESSAGES_REJECTED, &refused) > 0.0,
        "the refusal is counted"
    );
}
