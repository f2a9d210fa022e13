//! The core behaviours, each run on every broker (see `on_both_brokers!`).

use std::time::Duration;

use futures_util::future::join_all;
use protocol::error::ErrorBody;
use protocol::{Message, topic};
use reqwest::StatusCode;
use rumqttc::{AsyncClient, Event, Incoming, QoS};

use crate::helpers::{TestApp, WAIT, eventually, new_channel};

pub async fn a_posted_message_reaches_an_open_stream(app: TestApp) {
    let channel = new_channel();
    let mut stream = app.open_stream(channel, None).await;
    let posted = app.post_message(channel, "ann", "hello <b>world</b>").await;
    assert_eq!(posted.id, 1, "first message of a channel has id 1");
    assert_eq!(posted.channel, channel);
    assert_eq!(
        stream.next_message().await,
        posted,
        "stream carries the stored message"
    );
}

/// A node lets its subscription go when its last stream leaves; a stream opened
/// afterwards gets what it missed from history, then live messages again.
pub async fn a_stream_opened_after_every_stream_left_gets_the_missed_and_the_live(app: TestApp) {
    let channel = new_channel();
    let mut stream = app.open_stream(channel, None).await;
    let first = app.post_message(channel, "ann", "one").await;
    assert_eq!(stream.next_message().await, first);
    drop(stream);
    eventually("the last stream left", || async {
        app.sse_listeners().await == 0
    })
    .await;
    let missed = app
        .post_message(channel, "ann", "while nobody listened")
        .await;
    let mut stream = app.open_stream(channel, Some(first.id)).await;
    assert_eq!(stream.next_message().await, missed, "from history");
    let live = app.post_message(channel, "ann", "live again").await;
    assert_eq!(
        stream.next_message().await,
        live,
        "live after resubscribing"
    );
}

pub async fn the_broker_sees_every_message_as_json(app: TestApp) {
    let channel = new_channel();
    let broker = server::mqtt::BrokerUrl::parse(&app.broker.url, None).expect("broker url");
    let (client, mut eventloop) = AsyncClient::new(broker.options("crier-test-watcher"), 64);
    client
        .subscribe(topic::all_channels_filter(&app.prefix), QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    let watch = async {
        let mut subscribed = false;
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match eventloop.poll().await.expect("watcher stays connected") {
                Event::Incoming(Incoming::SubAck(_)) => subscribed = true,
                Event::Incoming(Incoming::Publish(publish)) => {
                    assert_eq!(publish.topic, topic::channel_topic(&app.prefix, channel));
                    let message: Message =
                        serde_json::from_slice(&publish.payload).expect("payload is message JSON");
                    seen.push(message);
                }
                _ => {}
            }
            if subscribed && seen.is_empty() {
                subscribed = false;
                app.post_message(channel, "ann", "one").await;
                app.post_message(channel, "bob", "two").await;
            }
        }
        seen
    };
    let seen = tokio::time::timeout(WAIT, watch)
        .await
        .expect("broker relays in time");
    let history = app.history(channel, "").await;
    assert_eq!(
        seen, history,
        "the broker carried exactly the stored messages"
    );
}

pub async fn history_pages_in_id_order(app: TestApp) {
    let channel = new_channel();
    for n in 1..=5 {
        app.post_message(channel, "ann", &format!("message {n}"))
            .await;
    }
    let ids = |messages: Vec<Message>| messages.into_iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(
        ids(app.history(channel, "").await),
        [1, 2, 3, 4, 5],
        "all, ascending"
    );
    assert_eq!(
        ids(app.history(channel, "?after=2&limit=2").await),
        [3, 4],
        "after + limit"
    );
    assert_eq!(
        ids(app.history(channel, "?limit=2").await),
        [4, 5],
        "latest N"
    );
    assert!(
        app.history(channel, "?after=5").await.is_empty(),
        "nothing after the last"
    );
    assert!(
        app.history(new_channel(), "").await.is_empty(),
        "unknown channel is empty"
    );

    let one = app
        .http
        .get(format!("{}/channels/{channel}/messages/3", app.chat_url()))
        .send()
        .await
        .expect("GET one");
    assert_eq!(one.status(), StatusCode::OK);
    let message: Message = one.json().await.expect("message JSON");
    assert_eq!((message.id, message.text.as_str()), (3, "message 3"));

    let missing = app
        .http
        .get(format!("{}/channels/{channel}/messages/99", app.chat_url()))
        .send()
        .await
        .expect("GET missing");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: ErrorBody = missing.json().await.expect("error JSON");
    assert_eq!(body.error.code, "message_not_found");
}

pub async fn resume_with_last_event_id_replays_then_goes_live_while_messages_flow(app: TestApp) {
    let channel = new_channel();
    for n in 1..=10 {
        app.post_message(channel, "ann", &format!("before {n}"))
            .await;
    }
    let posting = async {
        for n in 11..=30 {
            app.post_message(channel, "bob", &format!("during {n}"))
                .await;
        }
    };
    let reading = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut stream = app.open_stream(channel, Some(5)).await;
        stream.next_ids(25).await
    };
    let ((), ids) = tokio::join!(posting, reading);
    assert_eq!(
        ids,
        (6..=30).collect::<Vec<_>>(),
        "every id after 5, once, in order"
    );
}

pub async fn resume_with_the_query_parameter_works_like_the_header(app: TestApp) {
    let channel = new_channel();
    for n in 1..=4 {
        app.post_message(channel, "ann", &format!("m{n}")).await;
    }
    let mut stream = app.open_stream_with_query(channel, 2).await;
    assert_eq!(stream.next_ids(2).await, [3, 4]);
    app.post_message(channel, "ann", "m5").await;
    assert_eq!(stream.next_ids(1).await, [5], "then live");
}

pub async fn two_channels_do_not_leak_into_each_other(app: TestApp) {
    let (first, second) = (new_channel(), new_channel());
    let mut first_stream = app.open_stream(first, None).await;
    let mut second_stream = app.open_stream(second, None).await;
    let posted = app.post_message(first, "ann", "only for the first").await;
    assert_eq!(first_stream.next_message().await, posted);
    second_stream
        .expect_no_message_within(Duration::from_millis(500))
        .await;
    let other = app.post_message(second, "bob", "only for the second").await;
    assert_eq!(other.id, 1, "each channel numbers from 1");
    assert_eq!(second_stream.next_message().await, other);
    first_stream
        .expect_no_message_within(Duration::from_millis(300))
        .await;
}

pub async fn twenty_concurrent_posts_get_ids_1_to_20_once_and_stream_in_order(app: TestApp) {
    let channel = new_channel();
    let mut stream = app.open_stream(channel, None).await;
    let texts: Vec<String> = (0..20).map(|n| format!("concurrent {n}")).collect();
    let posts = texts
        .iter()
        .map(|text| app.post_message(channel, "ann", text));
    let mut ids: Vec<u64> = join_all(posts).await.into_iter().map(|m| m.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>(), "ids 1..20, each once");
    assert_eq!(
        stream.next_ids(20).await,
        (1..=20).collect::<Vec<_>>(),
        "the stream shows them in id order"
    );
}

pub async fn a_closed_stream_leaves_its_channel(app: TestApp) {
    let channel = new_channel();
    let stream = app.open_stream(channel, None).await;
    assert_eq!(app.sse_listeners().await, 1, "the open stream is counted");
    drop(stream);
    let released = async {
        while app.sse_listeners().await != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, released)
        .await
        .expect("the node notices the closed stream and leaves the channel");
    let mut again = app.open_stream(channel, None).await;
    let posted = app.post_message(channel, "ann", "after rejoining").await;
    assert_eq!(
        again.next_message().await,
        posted,
        "re-subscribing after the last listener left works"
    );
}

pub async fn a_retry_with_the_same_idempotency_key_returns_the_original(app: TestApp) {
    let channel = new_channel();
    let url = format!("{}/channels/{channel}/messages", app.chat_url());
    let mut answers = Vec::new();
    for text in ["first try", "retry"] {
        let response = app
            .http
            .post(&url)
            .header("Idempotency-Key", "order-42")
            .json(&serde_json::json!({ "author": "ann", "text": text }))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), StatusCode::CREATED);
        let replayed = response.headers().get("idempotent-replayed").cloned();
        let message: Message = response.json().await.expect("message JSON");
        answers.push((message, replayed));
    }
    assert_eq!(
        answers[0].0, answers[1].0,
        "the retry answers the original message"
    );
    assert_eq!(
        answers[1].1.as_ref().map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(app.history(channel, "").await.len(), 1, "stored once");
}

/// A cursor above the channel's newest id (data reset, restored or moved) is not
/// served silently: `event: reset` names the newest id, then the channel comes
/// from its start and goes live.
pub async fn a_cursor_past_the_newest_id_gets_a_reset_then_every_message(app: TestApp) {
    let channel = new_channel();
    for text in ["one", "two"] {
        app.post_message(channel, "ann", text).await;
    }
    let mut stream = app.open_stream(channel, Some(5)).await;
    assert_eq!(stream.next_reset().await, 2);
    assert_eq!(stream.next_ids(2).await, [1, 2]);
    let live = app.post_message(channel, "ann", "three").await;
    assert_eq!(stream.next_message().await, live);
}
